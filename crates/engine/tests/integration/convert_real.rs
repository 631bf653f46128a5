//! The two real test models converted GGUF → F32 HF folder by `convert`, then loaded
//! back as HF folders (dense F32 path, tokenizer.json and chat template from the
//! written files) and held to the golden README's float32 tolerances: the references
//! in tests/golden/real were computed by transformers on exactly such
//! conversions. Tolerances: per-position NLL 5e-4, perplexity 1e-5 relative, top-1
//! ids exact (except listed fragile positions), last logits 5e-4, greedy ids exact.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use unicorn_engine::convert::{gguf_to_hf, OutDType};
use unicorn_engine::LoadedModel;

fn converted(gguf: &str, cell: &'static OnceLock<PathBuf>) -> &'static Path {
    cell.get_or_init(|| {
        // One folder per test process (nextest runs each test in its own, and two
        // sharing one folder removed it under each other), under target/; folders
        // of processes that have ended are removed so runs do not pile up.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("converted");
        let procfs = Path::new("/proc/self").exists();
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if procfs && pid.parse::<u32>().is_ok() && !Path::new("/proc").join(&pid).exists() {
                std::fs::remove_dir_all(e.path()).ok();
            }
        }
        let out = root.join(std::process::id().to_string()).join(gguf);
        std::fs::remove_dir_all(&out).ok();
        gguf_to_hf(&model(gguf), &out, OutDType::F32, false, &mut |_| true).unwrap();
        out
    })
}

static SMOLLM_DIR: OnceLock<PathBuf> = OnceLock::new();
static GEMMA_DIR: OnceLock<PathBuf> = OnceLock::new();

fn load_dir(dir: &Path) -> LoadedModel {
    LoadedModel::load(dir, &f32_options()).unwrap()
}

fn log_softmax_at(row: &[f32], id: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let lse = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row[id] as f64 - lse
}

fn check_full_pass(m: &LoadedModel, case: &str) {
    let g = golden(&format!("real/{case}.safetensors"));
    let text = std::fs::read_to_string(golden_dir().join(format!("real/{case}.txt"))).unwrap();
    let input = ids(&g["input_ids"]);
    // The written tokenizer.json / tokenizer_config.json give HF's ids, BOS included.
    assert_eq!(
        m.tokenizer().unwrap().encode_with_bos(&text).unwrap(),
        input,
        "{case}: ids"
    );
    let mut cache = m.model().new_cache();
    let logits = floats(&m.model().forward(&input, &mut cache, 0).unwrap());
    let v = logits.len() / input.len();
    let want_nll = floats(&g["nll"]);
    let want_top1 = ids(&g["top1_ids"]);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join(format!("real/{case}.json"))).unwrap(),
    )
    .unwrap();
    let fragile: Vec<usize> = meta["fragile_top1_positions_margin_lt_0.001"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default();
    let (mut max_dnll, mut sum) = (0f64, 0f64);
    for i in 0..input.len() {
        let row = &logits[i * v..(i + 1) * v];
        if !fragile.contains(&i) {
            assert_eq!(
                unicorn_engine::sampler::argmax(row),
                want_top1[i],
                "{case}: top-1 at {i}"
            );
        }
        if i + 1 < input.len() {
            let nll = -log_softmax_at(row, input[i + 1] as usize);
            max_dnll = max_dnll.max((nll - want_nll[i] as f64).abs());
            sum += nll;
        }
    }
    let ppl = (sum / (input.len() - 1) as f64).exp();
    let want_ppl = floats(&g["perplexity"])[0] as f64;
    let rel = (ppl - want_ppl).abs() / want_ppl;
    let dlast = max_abs_diff(&logits[(input.len() - 1) * v..], &floats(&g["last_logits"]));
    eprintln!("{case}: max |ΔNLL| {max_dnll:.2e}, perplexity {ppl:.6} vs {want_ppl:.6} ({rel:.2e}), last logits {dlast:.2e}");
    assert!(max_dnll < 5e-4, "{case}: max |ΔNLL| {max_dnll}");
    assert!(rel < 1e-5, "{case}: perplexity {ppl} vs {want_ppl}");
    assert!(dlast < 5e-4, "{case}: last logits {dlast}");
}

#[test]
fn converted_smollm2_matches_transformers_f32_reference() {
    let m = load_dir(converted(SMOLLM, &SMOLLM_DIR));
    check_full_pass(&m, "smollm2-135m-instruct__ppl_jargon");
    // The chat template travelled through tokenizer_config.json.
    let prompt = check_paris(&m);
    check_real_greedy(
        &m,
        "smollm2-135m-instruct__chat_capital_of_france",
        &prompt,
        true,
    );
}

#[test]
fn converted_gemma3_matches_transformers_f32_reference() {
    let m = load_dir(converted(GEMMA, &GEMMA_DIR));
    check_full_pass(&m, "gemma-3-270m__ppl_jargon");
    let prompt = m
        .tokenizer()
        .unwrap()
        .encode_with_bos("The capital of France is")
        .unwrap();
    check_real_greedy(
        &m,
        "gemma-3-270m__continuation_capital_of_france",
        &prompt,
        true,
    );
}

/// The folder and the GGUF it came from are the same model: the GGUF path (16-bit
/// activations on packed weights) stays within golden_real's 0.03 of the F32 folder.
#[test]
fn converted_folders_give_the_ggufs_logits() {
    for (gguf, cell) in [(SMOLLM, &SMOLLM_DIR), (GEMMA, &GEMMA_DIR)] {
        let folder = load_dir(converted(gguf, cell));
        let file = LoadedModel::load(&model(gguf), &f32_options()).unwrap();
        let prompt = file
            .tokenizer()
            .unwrap()
            .encode_with_bos("The quick brown fox jumps over")
            .unwrap();
        let run = |m: &LoadedModel| {
            let mut cache = m.model().new_cache();
            floats(&m.model().forward(&prompt, &mut cache, 0).unwrap())
        };
        let d = max_abs_diff(&run(&folder), &run(&file));
        eprintln!("{gguf}: folder vs GGUF max |Δlogit| {d}");
        assert!(d < 0.03, "{gguf}: {d}");
    }
}

/// Speculative decoding with a quantized copy drafting for its original: the Q4_K_M
/// quantization of each converted F32 folder proposes, the folder checks, and the
/// greedy reply is the folder's own, id for id (96 tokens of a chat reply, a third or
/// more of them proposed and accepted). A draft of another vocabulary is refused, naming
/// ids that differ.
#[test]
fn a_quantized_copy_drafts_for_its_original_with_identical_greedy_ids() {
    use unicorn_engine::quantize::{quantize, types::QuantType};
    use unicorn_engine::speculative::Draft;
    use unicorn_engine::{GenerationParams, Message};
    let scratch =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("draft-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut drafts = Vec::new();
    for (gguf, cell) in [(SMOLLM, &SMOLLM_DIR), (GEMMA, &GEMMA_DIR)] {
        let dir = converted(gguf, cell);
        let q4 = scratch.join(format!("{gguf}.q4_k_m.gguf"));
        quantize(dir, &q4, QuantType::Q4KM, true, &mut |_| true).unwrap();
        let target = load_dir(dir);
        let draft = std::sync::Arc::new(LoadedModel::load(&q4, &f32_options()).unwrap());
        let msgs = [Message::user(
            "Write a short story about a robot learning to paint.",
        )];
        let mut params = GenerationParams::greedy(96);
        params.ignore_eos = true;
        let alone = target
            .chat_session()
            .send(&msgs, &params, &mut |_| true)
            .unwrap();
        let mut s = target.chat_session();
        // At least 4 proposals a step: the check does not hang on timings.
        s.set_draft(Some(Draft::with_min(&target, draft.clone(), 8, 4).unwrap()));
        let drafted = s.send(&msgs, &params, &mut |_| true).unwrap();
        assert_eq!(drafted.token_ids, alone.token_ids, "{gguf}");
        assert_eq!(drafted.text, alone.text, "{gguf}");
        let d = drafted.stats.draft.clone().unwrap();
        eprintln!("{gguf}: {d:?}");
        assert!(d.accepted >= 32 && d.accepted <= d.drafted, "{gguf}: {d:?}");
        assert!(alone.stats.draft.is_none());
        drafts.push((target, draft));
    }
    let e = Draft::new(&drafts[0].0, drafts[1].1.clone(), 4)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot draft for") && e.contains("vocabularies"),
        "{e}"
    );
    std::fs::remove_dir_all(&scratch).ok();
}
