//! Gemma 3 with images (issue 18): the tiny `gemma3_vision` model of tests/golden
//! against transformers: the SigLIP tower's output and the projector's image
//! features from the golden `pixel_values`, the logits at every prompt position
//! with the image's features in place and its tokens attending both ways, 16
//! greedy steps on the KV cache; the published key layout; malformed folders.

use crate::common::*;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use unicorn_engine::models::siglip::{VisionConfig, VisionFiles, VisionTower};
use unicorn_engine::models::{Config, ImageSpan, Model};
use unicorn_engine::quantize::types::QuantType;
use unicorn_engine::source::Source;

/// Tolerance of the tower's output and the image features (golden README, A2).
const FEATURE_TOL: f32 = 1e-4;

fn folder() -> std::path::PathBuf {
    tiny("gemma3_vision")
}

fn gold() -> HashMap<String, Tensor> {
    golden("tiny/gemma3_vision/golden.safetensors")
}

/// The tower of the folder at `dir`.
fn tower(dir: &Path) -> unicorn_engine::Result<VisionTower> {
    let src = Source::open(dir)?;
    let text = Config::from_source(&src)?;
    let Source::Hf(h) = &src else {
        panic!("{}: not a folder", dir.display())
    };
    let cfg = VisionConfig::from_hf(h.config(), &text)?.expect("a vision_config");
    VisionTower::load(VisionFiles::Hf(h), &cfg, &Device::Cpu)
}

fn pixels() -> Tensor {
    gold()["pixel_values"].squeeze(0).unwrap()
}

/// The golden prompt's logits with the image's features at its 16 tokens.
fn logits(dir: &Path) -> Vec<f32> {
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let model = f32_cache(Model::load(&Source::open(dir).unwrap(), &Device::Cpu).unwrap());
    let features = tower(dir).unwrap().encode(&pixels()).unwrap();
    let mut cache = model.new_cache();
    let spans = [ImageSpan {
        at: image_start(&ids),
        features: &features,
    }];
    floats(
        &model
            .forward_with_images(&ids, &mut cache, 0, &spans)
            .unwrap(),
    )
}

/// Where the golden prompt's 16 image tokens start (after BOS, 6 ids and boi).
fn image_start(ids: &[u32]) -> usize {
    let at = ids.iter().position(|&i| i == 511).unwrap();
    assert_eq!(at, 8);
    at
}

#[test]
fn vision_tower_and_projector_match_transformers() {
    let t = tower(&folder()).unwrap();
    let g = gold();
    let hidden = t.hidden_states(&pixels()).unwrap();
    let d = max_abs_diff(&floats(&hidden), &floats(&g["vision_last_hidden_state"]));
    assert!(d < FEATURE_TOL, "vision_last_hidden_state: max |Δ| {d}");
    let features = t.encode(&pixels()).unwrap();
    assert_eq!(features.dims(), [16, 64]);
    let d = max_abs_diff(&floats(&features), &floats(&g["image_features"]));
    assert!(d < FEATURE_TOL, "image_features: max |Δ| {d}");
}

#[test]
fn logits_with_an_image_match_transformers_at_every_position() {
    let got = logits(&folder());
    let d = max_abs_diff(&got, &floats(&gold()["logits"]));
    assert!(d < LOGIT_TOL, "logits: max |Δ| {d}");
}

/// The prompt with its image, then 16 greedy steps through the cache: each step's
/// logits within tolerance, the ids exact.
#[test]
fn greedy_ids_with_an_image_on_the_kv_cache_match_transformers() {
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let dir = folder();
    let model = f32_cache(Model::load(&Source::open(&dir).unwrap(), &Device::Cpu).unwrap());
    let features = tower(&dir).unwrap().encode(&pixels()).unwrap();
    let spans = [ImageSpan {
        at: image_start(&ids),
        features: &features,
    }];
    let mut cache = model.new_cache();
    let mut logits = model
        .forward_with_images(&ids, &mut cache, ids.len() - 1, &spans)
        .unwrap();
    let want_ids = unicorn_test_support::ids(&g["greedy_ids"]);
    let want = floats(&g["greedy_logits"]);
    let vocab = want.len() / want_ids.len();
    let mut got_ids = Vec::new();
    for step in 0..want_ids.len() {
        let l = floats(&logits);
        let d = max_abs_diff(&l, &want[step * vocab..(step + 1) * vocab]);
        assert!(d < LOGIT_TOL, "step {step}: max |Δlogit| {d}");
        let next = unicorn_engine::sampler::argmax(&l);
        got_ids.push(next);
        logits = model.forward(&[next], &mut cache, 0).unwrap();
    }
    assert_eq!(got_ids, want_ids);
}

/// Without the image's features the same ids give other logits: the test above
/// cannot pass by ignoring the image. Nor by a purely causal mask: the image block
/// attending both ways is what transformers computes (golden README ablations).
#[test]
fn the_image_and_its_bidirectional_block_both_matter() {
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let dir = folder();
    let model = f32_cache(Model::load(&Source::open(&dir).unwrap(), &Device::Cpu).unwrap());
    let want = floats(&g["logits"]);
    let plain = floats(&model.forward(&ids, &mut model.new_cache(), 0).unwrap());
    assert!(max_abs_diff(&plain, &want) > 1.0);
    // The features fed one token at a time: each image token sees only the ones
    // before it, as a causal mask would have it.
    let features = tower(&dir).unwrap().encode(&pixels()).unwrap();
    let at = image_start(&ids);
    let mut cache = model.new_cache();
    let mut causal = floats(&model.forward(&ids[..at], &mut cache, 0).unwrap());
    for i in 0..16 {
        let row = features.narrow(0, i, 1).unwrap();
        let spans = [ImageSpan {
            at: 0,
            features: &row,
        }];
        let l = model
            .forward_with_images(&ids[at + i..at + i + 1], &mut cache, 0, &spans)
            .unwrap();
        causal.extend(floats(&l));
    }
    causal.extend(floats(
        &model.forward(&ids[at + 16..], &mut cache, 0).unwrap(),
    ));
    let d = max_abs_diff(&causal, &want);
    assert!(d > 1.0, "causal image block: max |Δ| only {d}");
}

/// Published checkpoints spell the tower `vision_tower.vision_model.*`: the same
/// logits, bit for bit.
#[test]
fn published_key_layout_loads_the_same_tower() {
    let dir = scratch("vision-published");
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(folder().join(f), dir.join(f)).unwrap();
    }
    let w: HashMap<String, Tensor> = golden("tiny/gemma3_vision/model.safetensors")
        .into_iter()
        .map(|(k, v)| match k.strip_prefix("vision_tower.") {
            Some(rest) => (format!("vision_tower.vision_model.{rest}"), v),
            None => (k, v),
        })
        .collect();
    assert!(w
        .keys()
        .any(|k| k.starts_with("vision_tower.vision_model.encoder.")));
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    assert_eq!(logits(&dir), logits(&folder()));
    std::fs::remove_dir_all(&dir).ok();
}

/// A copy of the folder with its weights changed by `edit`.
fn broken(tag: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> std::path::PathBuf {
    let dir = scratch(&format!("vision-{tag}"));
    std::fs::copy(folder().join("config.json"), dir.join("config.json")).unwrap();
    let mut w = golden("tiny/gemma3_vision/model.safetensors");
    edit(&mut w);
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn a_malformed_vision_tower_is_one_clear_error() {
    let missing = broken("missing", |w| {
        w.remove("multi_modal_projector.mm_input_projection_weight");
    });
    let e = tower(&missing)
        .err()
        .expect("loaded without a projection")
        .to_string();
    assert!(
        e.contains("mm_input_projection_weight") && e.contains("missing"),
        "{e}"
    );
    let reshaped = broken("shape", |w| {
        let t = Tensor::zeros((63, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        w.insert(
            "vision_tower.embeddings.position_embedding.weight".into(),
            t,
        );
    });
    let e = tower(&reshaped)
        .err()
        .expect("loaded a wrong shape")
        .to_string();
    assert!(
        e.contains("position_embedding") && e.contains("[63, 32]") && e.contains("[64, 32]"),
        "{e}"
    );
    let nan = broken("nan", |w| {
        let t = Tensor::full(f32::NAN, (32, 32), &Device::Cpu).unwrap();
        w.insert(
            "vision_tower.encoder.layers.1.self_attn.k_proj.weight".into(),
            t,
        );
    });
    let e = tower(&nan).err().expect("loaded NaN").to_string();
    assert!(e.contains("k_proj") && e.contains("NaN"), "{e}");
    for d in [missing, reshaped, nan] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn a_bad_vision_config_is_one_clear_error() {
    let dir = scratch("vision-config");
    std::fs::copy(
        folder().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder().join("config.json")).unwrap())
            .unwrap();
    for (edit, want) in [
        (
            ("mm_tokens_per_image", serde_json::json!(15)),
            "tokens per image",
        ),
        (
            ("mm_tokens_per_image", serde_json::json!("16")),
            "mm_tokens_per_image",
        ),
        (
            ("image_token_index", serde_json::json!(512)),
            "image_token_index",
        ),
    ] {
        let mut cfg = base.clone();
        cfg[edit.0] = edit.1;
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let e = tower(&dir).err().expect("a bad config loaded").to_string();
        assert!(e.contains(want) && e.contains("config.json"), "{e}");
    }
    for (key, value, want) in [
        ("patch_size", serde_json::json!(7), "patches"),
        ("num_attention_heads", serde_json::json!(3), "heads"),
        ("hidden_act", serde_json::json!("relu"), "hidden_act"),
        ("image_size", serde_json::json!(1u64 << 40), "image_size"),
    ] {
        let mut cfg = base.clone();
        cfg["vision_config"][key] = value;
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let e = tower(&dir)
            .err()
            .expect("a bad vision_config loaded")
            .to_string();
        assert!(e.contains(want), "{key}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Our preprocessing of `image.png` (Pillow's bilinear resampling, 1/255, mean and
/// std 0.5) gives transformers' `pixel_values`, and through the model its logits.
#[test]
fn our_preprocessing_gives_transformers_pixels_and_logits() {
    let dir = folder();
    let m = unicorn_engine::LoadedModel::load(&dir, &f32_options()).unwrap();
    let v = m.vision().expect("the folder's vision tower");
    let image = m.open_image(&dir.join("image.png")).unwrap();
    let d = max_abs_diff(&floats(image.pixels()), &floats(&pixels()));
    assert!(d < 1e-6, "pixel_values: max |Δ| {d}");
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let features = v.features(&image).unwrap();
    let spans = [ImageSpan {
        at: image_start(&ids),
        features: &features,
    }];
    let logits = m
        .model()
        .forward_with_images(&ids, &mut m.model().new_cache(), 0, &spans)
        .unwrap();
    let d = max_abs_diff(&floats(&logits), &floats(&g["logits"]));
    assert!(d < LOGIT_TOL, "logits: max |Δ| {d}");
}

/// The engine's generation loop with an image: transformers' 16 greedy ids.
#[test]
fn generate_with_an_image_gives_transformers_greedy_ids() {
    let dir = folder();
    let m = unicorn_engine::LoadedModel::load(&dir, &f32_options()).unwrap();
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let image = m.open_image(&dir.join("image.png")).unwrap();
    let mut params = unicorn_engine::GenerationParams::greedy(16);
    params.ignore_eos = true;
    let reply = m
        .generate_with_images(&ids, std::slice::from_ref(&image), &params, &mut |_| true)
        .unwrap();
    assert_eq!(reply.token_ids, unicorn_test_support::ids(&g["greedy_ids"]));
    assert_eq!(reply.stats.image_tokens, 16);
    // The image's tokens without an image, or two images for one run: refused.
    let e = m.generate(&ids, &params, &mut |_| true);
    assert!(e.is_ok(), "plain ids still run: {e:?}");
    let e = m
        .generate_with_images(&ids, &[image.clone(), image], &params, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1 images' tokens") && e.contains("2 images"),
        "{e}"
    );
    let short = &ids[..20];
    let e = m
        .generate_with_images(short, &[], &params, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("run of 12 image tokens"), "{e}");
}

#[test]
fn a_bad_image_file_is_one_clear_error() {
    let m = unicorn_engine::LoadedModel::load(&folder(), &f32_options()).unwrap();
    let dir = scratch("vision-bad-image");
    let cut = dir.join("cut.png");
    let png = std::fs::read(folder().join("image.png")).unwrap();
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    for (p, want) in [
        (cut, "cut.png"),
        (text, "not an image"),
        (dir.join("absent.png"), "absent.png"),
        (dir.clone(), "folder"),
    ] {
        let e = m.open_image(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{}: {e}", p.display());
    }
    std::fs::remove_dir_all(&dir).ok();
    // A model without a tower says so.
    let text_only =
        unicorn_engine::LoadedModel::load(&tiny("gemma3_text"), &f32_options()).unwrap();
    let e = text_only
        .open_image(&folder().join("image.png"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("takes no images"), "{e}");
}

/// A session's cache holds an image only where the same image comes again: the
/// same prompt with another image recomputes from that image on (and equals a
/// fresh run), the same image again reuses everything.
#[test]
fn the_cache_reuses_an_image_only_where_it_is_the_same() {
    let dir = folder();
    let m = unicorn_engine::LoadedModel::load(&dir, &f32_options()).unwrap();
    let v = m.vision().unwrap();
    let ids = ids(&gold()["input_ids"]);
    let a = m.open_image(&dir.join("image.png")).unwrap();
    // Another image: the same pixels upside down.
    let b = v
        .image(a.pixels().flip(&[1]).unwrap(), Path::new("flipped"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(a != b);
    let mut params = unicorn_engine::GenerationParams::greedy(4);
    params.ignore_eos = true;
    let fresh_b = m
        .generate_with_images(&ids, std::slice::from_ref(&b), &params, &mut |_| true)
        .unwrap();
    let mut s = m.chat_session();
    let first = s
        .complete_with_images(&ids, std::slice::from_ref(&a), &params, &mut |_| true)
        .unwrap();
    assert_eq!(first.stats.prefill_tokens, 31);
    let again = s
        .complete_with_images(&ids, std::slice::from_ref(&a), &params, &mut |_| true)
        .unwrap();
    assert_eq!(again.stats.prefill_tokens, 1, "the same image is reused");
    assert_eq!(again.token_ids, first.token_ids);
    let other = s
        .complete_with_images(&ids, std::slice::from_ref(&b), &params, &mut |_| true)
        .unwrap();
    assert_eq!(
        other.stats.prefill_tokens,
        31 - 8,
        "recomputed from the image on"
    );
    assert_eq!(other.token_ids, fresh_b.token_ids);
    assert_ne!(other.token_ids, first.token_ids);
}

/// A chat turn's image expands as transformers' Gemma3Processor writes it, in the
/// real Gemma 3 vocabulary: `\n\n<start_of_image>`, the image tokens,
/// `<end_of_image>\n\n`, where the message held it.
#[test]
fn a_chat_image_expands_to_gemmas_image_tokens() {
    use unicorn_engine::models::siglip::ImageTokens;
    use unicorn_engine::vision::{expand_markers, MARKER};
    let tok = unicorn_engine::tokenizer::Tokenizer::from_file(
        &model(GEMMA_TOKENIZER),
        Some("<bos>"),
        Some("<eos>"),
        Some(true),
    )
    .unwrap();
    let [image, begin, end] = ImageTokens::TEXT.map(|t| tok.token_id(t).unwrap());
    assert_eq!((image, begin, end), (262_144, 255_999, 256_000));
    let tokens = ImageTokens { image, begin, end };
    let text = format!("<start_of_turn>user\n{MARKER}Describe this.<end_of_turn>\n");
    let ids = tok
        .encode(&expand_markers(&text, tokens, 4, &tok).unwrap())
        .unwrap();
    // The text around the image is tokenized with the newlines the processor adds
    // (here "user\n" + "\n\n" becomes one "\n\n\n" token, as in transformers,
    // which also tokenizes the expanded text).
    let at = ids.iter().position(|&i| i == begin).unwrap();
    assert_eq!(
        tok.decode(&ids[..at], true).unwrap(),
        "<start_of_turn>user\n\n\n"
    );
    assert_eq!(&ids[at + 1..at + 5], &[image; 4]);
    assert_eq!(ids[at + 5], end);
    assert_eq!(
        tok.decode(&ids[at + 6..], true).unwrap(),
        "\n\nDescribe this.<end_of_turn>\n"
    );
}

/// Quantizes the tiny folder to `out` (its mmproj beside it); `go` false cancels at
/// the first progress report.
fn quantize_tiny(
    out: &Path,
    to: QuantType,
    force: bool,
    go: bool,
) -> unicorn_engine::Result<unicorn_engine::quantize::QuantizeReport> {
    unicorn_engine::quantize::quantize(&folder(), out, to, force, &mut |_| go)
}

/// The tiny folder as llama.cpp runs it: `quantize` writes the text model to a GGUF
/// and the tower as an mmproj beside it (F16 matrices, as llama.cpp's converter).
/// Found beside the GGUF, it gives transformers' greedy ids and logits within the
/// F16 weights' rounding. NF4 export keeps the tower as it was and says so.
#[test]
fn a_gguf_with_its_mmproj_beside_it_sees_the_image() {
    let dir = scratch("vision-gguf");
    let gguf = dir.join("tiny-vision-F32.gguf");
    let report = quantize_tiny(&gguf, QuantType::F32, false, true).unwrap();
    let proj = dir.join("mmproj-tiny-vision-F32.gguf");
    assert_eq!(report.mmproj, Some(proj.display().to_string()));
    // The same again is refused without --force, the mmproj included.
    let e = quantize_tiny(&dir.join("other.gguf"), QuantType::F32, false, false)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("cancel") || e.to_string().contains("Cancel"),
        "{e}"
    );
    assert!(
        !dir.join("mmproj-other.gguf").exists(),
        "a cancelled run leaves no mmproj"
    );
    // A cancelled --force run over the first output leaves both old files whole.
    let (model_before, proj_before) =
        (std::fs::read(&gguf).unwrap(), std::fs::read(&proj).unwrap());
    let e = quantize_tiny(&gguf, QuantType::Q8_0, true, false)
        .err()
        .unwrap();
    assert!(matches!(e, unicorn_engine::Error::Cancelled), "{e}");
    assert_eq!(std::fs::read(&gguf).unwrap(), model_before);
    assert_eq!(std::fs::read(&proj).unwrap(), proj_before);
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .count(),
        0
    );

    let nf4 = dir.join("nf4");
    let r =
        unicorn_engine::formats::nf4::export::export(&folder(), &nf4, 64, true, false, &mut |_| {
            true
        })
        .unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("vision tower")),
        "{:?}",
        r.notes
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nf4.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"]["llm_int8_skip_modules"],
        serde_json::json!(["vision_tower", "multi_modal_projector", "lm_head"])
    );
    let m = unicorn_engine::LoadedModel::load(&nf4, &f32_options()).unwrap();
    assert!(m.vision().is_some(), "the NF4 folder keeps its tower");

    let m = unicorn_engine::LoadedModel::load(&gguf, &f32_options()).unwrap();
    let v = m.vision().expect("the mmproj beside the GGUF");
    assert_eq!(v.origin(), proj.as_path());
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let image = m.open_image(&folder().join("image.png")).unwrap();
    let d = max_abs_diff(
        &floats(&v.features(&image).unwrap()),
        &floats(&g["image_features"]),
    );
    assert!(d < 0.05, "image_features through F16: max |Δ| {d}");
    let mut params = unicorn_engine::GenerationParams::greedy(16);
    params.ignore_eos = true;
    let reply = m
        .generate_with_images(&ids, std::slice::from_ref(&image), &params, &mut |_| true)
        .unwrap();
    assert_eq!(reply.token_ids, unicorn_test_support::ids(&g["greedy_ids"]));
    // Named explicitly, or refused when it is another kind of file.
    let named = unicorn_engine::LoadOptions {
        mmproj: Some(proj.clone()),
        ..f32_options()
    };
    assert!(unicorn_engine::LoadedModel::load(&gguf, &named)
        .unwrap()
        .vision()
        .is_some());
    let wrong = unicorn_engine::LoadOptions {
        mmproj: Some(gguf.clone()),
        ..f32_options()
    };
    let e = unicorn_engine::LoadedModel::load(&gguf, &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("clip.projector_type") && e.contains("tiny-vision-F32.gguf"),
        "{e}"
    );
    let off = unicorn_engine::LoadOptions {
        text_only: true,
        ..f32_options()
    };
    assert!(unicorn_engine::LoadedModel::load(&gguf, &off)
        .unwrap()
        .vision()
        .is_none());
    std::fs::remove_dir_all(&dir).ok();
}

/// A conversation with an image, stored and restored (as the app reopens a saved
/// chat): the next turn sees the image again and answers as a fresh run of the
/// whole conversation with its image; a marker count that differs from the images is one clear error.
#[test]
fn a_restored_conversation_sees_its_images_again() {
    let dir = scratch("restore-images");
    let folder = tiny_vision_chat(&dir);
    let m = unicorn_engine::LoadedModel::load(&folder, &f32_options()).unwrap();
    let img = m
        .open_image(&tiny("gemma3_vision").join("image.png"))
        .unwrap();
    let mut params = unicorn_engine::GenerationParams::greedy(6);
    params.ignore_eos = true;
    let mut live = m.chat_session();
    live.send_with_images(
        &[unicorn_engine::Message::user("Look.")],
        std::slice::from_ref(&img),
        &params,
        &mut |_| true,
    )
    .unwrap();
    let next = [unicorn_engine::Message::user("Again?")];
    let stored = live.messages().to_vec();
    assert_eq!(stored.len(), 2);
    // What a fresh cache computes for the whole conversation with its image.
    let mut all = stored.clone();
    all.extend_from_slice(&next);
    let prompt = m.chat_prompt(&all, std::slice::from_ref(&img)).unwrap();
    let want = m
        .generate_with_images(
            prompt.ids(),
            std::slice::from_ref(&img),
            &params,
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(want.stats.image_tokens, 16);

    let mut back = m.chat_session();
    back.restore_with_images(stored.clone(), vec![img.clone()])
        .unwrap();
    let got = back.send(&next, &params, &mut |_| true).unwrap();
    assert_eq!(got.stats.image_tokens, 16);
    assert_eq!(got.token_ids, want.token_ids);

    let e = back
        .restore_with_images(stored, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("places 1 images but 0 were given"), "{e}");
    assert!(back.messages().is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

/// `convert` of a GGUF with its mmproj beside it keeps the tower: the folder is a
/// Gemma3ForConditionalGeneration checkpoint in the published layout with its
/// preprocessor, and it sees the image as the GGUF and mmproj do (the same tower
/// values: image features within the F32 products' rounding, the same greedy ids).
#[test]
fn convert_keeps_the_vision_tower_of_an_mmproj() {
    let dir = scratch("vision-convert");
    let gguf = dir.join("tiny-vision-F32.gguf");
    let q = quantize_tiny(&gguf, QuantType::F32, false, true).unwrap();
    let proj = std::path::PathBuf::from(q.mmproj.unwrap());
    let out = dir.join("converted");
    let r = unicorn_engine::convert::gguf_to_hf(
        &gguf,
        &out,
        unicorn_engine::convert::OutDType::F32,
        false,
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(r.mmproj.as_deref(), Some(proj.as_path()));
    assert!(
        r.files.contains(&"preprocessor_config.json".to_string()),
        "{:?}",
        r.files
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "Gemma3ForConditionalGeneration");
    assert_eq!(cfg["image_token_index"], 511);
    assert_eq!(cfg["mm_tokens_per_image"], 16);
    let st = std::fs::read(out.join("model.safetensors")).unwrap();
    let names = safetensors::SafeTensors::deserialize(&st)
        .unwrap()
        .names()
        .len();
    assert!(
        String::from_utf8_lossy(&st[..st.len().min(1 << 16)])
            .contains("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"),
        "published layout"
    );
    assert!(names > 10);

    let from_gguf = unicorn_engine::LoadedModel::load(&gguf, &f32_options()).unwrap();
    let from_folder = unicorn_engine::LoadedModel::load(&out, &f32_options()).unwrap();
    let g = gold();
    let ids = ids(&g["input_ids"]);
    let image = folder().join("image.png");
    let (a, b) = (
        from_gguf.open_image(&image).unwrap(),
        from_folder.open_image(&image).unwrap(),
    );
    assert_eq!(
        floats(a.pixels()),
        floats(b.pixels()),
        "the same preprocessing"
    );
    let d = max_abs_diff(
        &floats(&from_gguf.vision().unwrap().features(&a).unwrap()),
        &floats(&from_folder.vision().unwrap().features(&b).unwrap()),
    );
    assert!(d < 1e-3, "image features: max |Δ| {d}");
    let mut params = unicorn_engine::GenerationParams::greedy(16);
    params.ignore_eos = true;
    let run = |m: &unicorn_engine::LoadedModel, img| {
        m.generate_with_images(&ids, std::slice::from_ref(img), &params, &mut |_| true)
            .unwrap()
            .token_ids
    };
    assert_eq!(run(&from_folder, &b), run(&from_gguf, &a));
    std::fs::remove_dir_all(&dir).ok();
}

/// An encode told to stop gives up between the tower's layers with `Cancelled` and
/// keeps nothing; the next call computes the features whole, as an uninterrupted
/// encode gives them.
#[test]
fn an_encode_told_to_stop_gives_up_and_keeps_nothing() {
    let dir = folder();
    let m = unicorn_engine::LoadedModel::load(&dir, &f32_options()).unwrap();
    let v = m.vision().expect("the folder's vision tower");
    let image = m.open_image(&dir.join("image.png")).unwrap();
    let asked = std::cell::Cell::new(0);
    let stop_at_second = || {
        asked.set(asked.get() + 1);
        asked.get() >= 2
    };
    match v.features_until(&image, &stop_at_second) {
        Err(unicorn_engine::Error::Cancelled) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(asked.get(), 2, "asked before each layer until told to stop");
    let whole = v.features(&image).unwrap();
    let fresh = m.open_image(&dir.join("image.png")).unwrap();
    let d = max_abs_diff(&floats(&whole), &floats(&v.features(&fresh).unwrap()));
    assert_eq!(d, 0.0);
}
