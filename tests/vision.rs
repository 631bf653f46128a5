//! Images through the `unicorn` command (issue 18): the tiny Gemma 3 vision model of
//! tests/golden with its image, from token ids, against transformers' greedy ids.

use unicorn_test_support::cli::*;
use unicorn_test_support::*;

/// The golden prompt: BOS, 6 ids, boi, the image's 16 tokens, eoi, 6 ids.
fn prompt_ids() -> String {
    let (ids, _) = tiny_greedy("gemma3_vision");
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn generate_with_an_image_follows_transformers() {
    let dir = tiny("gemma3_vision");
    let image = dir.join("image.png");
    let out = run(
        &[
            "generate",
            dir.to_str().unwrap(),
            "--prompt-ids",
            &prompt_ids(),
            "--image",
            image.to_str().unwrap(),
            "--max-tokens",
            "16",
            "--temperature",
            "0",
            "--ignore-eos",
            "--kv-type",
            "f32",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let done = json_lines(&out).pop().unwrap();
    let (_, want) = tiny_greedy("gemma3_vision");
    let got: Vec<u64> = done["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(done["image_tokens"], 16);
    assert_eq!(done["prompt_tokens"], 31);
}

/// Wrong counts, bad files and a model without a tower: one error line each.
#[test]
fn image_mistakes_are_one_clear_error() {
    let dir = tiny("gemma3_vision");
    let d = dir.to_str().unwrap();
    let image = dir.join("image.png");
    let img = image.to_str().unwrap();
    let config = dir.join("config.json");
    let text = tiny("gemma3_text");
    let ids = prompt_ids();
    for (args, want) in [
        (
            vec![
                "generate",
                d,
                "--prompt-ids",
                &ids,
                "--image",
                img,
                "--image",
                img,
            ],
            "1 images' tokens but 2 images",
        ),
        (
            vec!["generate", d, "--prompt-ids", &ids],
            "1 images' tokens but 0 images",
        ),
        (
            vec![
                "generate",
                d,
                "--prompt-ids",
                &ids,
                "--image",
                config.to_str().unwrap(),
            ],
            "config.json: not an image",
        ),
        (
            vec!["generate", d, "--prompt", "hi", "--image", img],
            "--image goes with --prompt-ids",
        ),
        (
            vec![
                "generate",
                text.to_str().unwrap(),
                "--prompt-ids",
                "2 3",
                "--image",
                img,
            ],
            "takes no images",
        ),
        (
            vec!["generate", d, "--prompt-ids", "2 3", "--mmproj", img],
            "an mmproj goes with a GGUF model",
        ),
    ] {
        let out = run(&args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
