//! Images in requests: OpenAI's `image_url` parts with a base64 data URL, and
//! Anthropic's `image` blocks with a base64 source. The server fetches nothing
//! (a remote URL is refused, as llama-server does by default), and the bytes are
//! only held here: decoding and preprocessing happen in the engine
//! ([`LoadedModel::image_from_bytes`]), off the async threads.
//!
//! A message keeps one [`MARKER`] where each image stood among its parts, so the
//! chat template places the image's tokens there (Gemma 3's template writes
//! `<start_of_image>` where an image part is).

use crate::error::{ApiError, Kind};
use base64::Engine as _;
use serde_json::Value;
use unicorn_engine::vision::{Image, MARKER};
use unicorn_engine::LoadedModel;

/// The most images one request may carry.
pub const MAX_IMAGES: usize = 16;

/// The largest image, decoded from base64 (a 4K PNG is well under this).
pub const MAX_IMAGE_BYTES: usize = 20 << 20;

/// The images of a request, in the order their markers appear in the rendered
/// conversation, each with the parameter that held it (for errors).
#[derive(Debug, Default)]
pub struct Images {
    items: Vec<(String, Vec<u8>)>,
}

impl Images {
    /// None.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Adds an image's bytes from `at` and returns the marker that stands for it in
    /// its message's text.
    pub fn push(&mut self, at: &str, bytes: Vec<u8>) -> Result<char, ApiError> {
        if self.items.len() == MAX_IMAGES {
            return Err(ApiError::invalid(
                at,
                format!("at most {MAX_IMAGES} images per request"),
            ));
        }
        self.items.push((at.to_string(), bytes));
        Ok(MARKER)
    }

    /// The images prepared for `model` (decoded, resized, normalised) and encoded
    /// by its vision tower, so that the batching thread only places their features.
    /// Blocking: the tower takes seconds on a CPU, so it stops between layers once
    /// `left()` says the client has gone.
    pub fn prepare(
        self,
        model: &LoadedModel,
        left: &dyn Fn() -> bool,
    ) -> Result<Vec<Image>, ApiError> {
        if self.items.is_empty() {
            return Ok(Vec::new());
        }
        let Some(eyes) = model.vision() else {
            let (at, _) = &self.items[0];
            return Err(ApiError::invalid(
                at,
                format!(
                    "the model takes no images ({} has no vision tower)",
                    model
                        .path()
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
            ));
        };
        self.items
            .into_iter()
            .map(|(at, bytes)| {
                let bad = |e: unicorn_engine::Error| match e {
                    unicorn_engine::Error::Cancelled => {
                        ApiError::new(Kind::Internal, "the client left during the image's encode")
                    }
                    e => ApiError::invalid(&at, e.to_string()),
                };
                let image = model.image_from_bytes(&bytes, &at).map_err(bad)?;
                eyes.features_until(&image, left).map_err(bad)?;
                Ok(image)
            })
            .collect()
    }
}

/// `text` as a message holds it: only an image part may place the image
/// placeholder, so a user's text holding one is refused, and another turn's (a
/// reply sent back, which a model may have written) shows U+FFFD instead.
pub fn plain_text(text: &str, at: &str, user: bool) -> Result<String, ApiError> {
    match (text.contains(MARKER), user) {
        (false, _) => Ok(text.to_string()),
        (true, true) => Err(ApiError::invalid(
            at,
            "text may not contain U+FFFC (the image placeholder)",
        )),
        (true, false) => Ok(text.replace(MARKER, "\u{FFFD}")),
    }
}

/// The bytes of an OpenAI `image_url` part (`{"type": "image_url", "image_url":
/// {"url": "data:image/png;base64,…"}}`; `url` may also be the string itself).
pub fn openai_part(part: &Value, at: &str) -> Result<Vec<u8>, ApiError> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(at, "an image_url part needs image_url.url"))?;
    data_url(url, at)
}

/// The bytes of an Anthropic `image` block (`{"type": "image", "source": {"type":
/// "base64", "media_type": "image/png", "data": "…"}}`).
pub fn anthropic_block(block: &Value, at: &str) -> Result<Vec<u8>, ApiError> {
    let source = block
        .get("source")
        .ok_or_else(|| ApiError::invalid(at, "an image block needs a source"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {}
        Some("url") => return Err(remote(&format!("{at}.source"))),
        k => {
            return Err(ApiError::invalid(
                &format!("{at}.source.type"),
                format!(
                    "image source of type {:?}: expected base64",
                    k.unwrap_or("?")
                ),
            ))
        }
    }
    let media = source
        .get("media_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !media.starts_with("image/") {
        return Err(ApiError::invalid(
            &format!("{at}.source.media_type"),
            format!("{:?} is not an image type", short(media)),
        ));
    }
    let data = source
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(&format!("{at}.source.data"), "no base64 data"))?;
    decode(data, &format!("{at}.source.data"))
}

/// The bytes of a `data:image/…;base64,…` URL.
fn data_url(url: &str, at: &str) -> Result<Vec<u8>, ApiError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(remote(at));
    }
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(ApiError::invalid(
            at,
            format!(
                "{:?} is not a data URL (data:image/png;base64,…)",
                short(url)
            ),
        ));
    };
    let Some((head, data)) = rest.split_once(',') else {
        return Err(ApiError::invalid(at, "the data URL has no comma"));
    };
    let mut fields = head.split(';');
    let media = fields.next().unwrap_or("");
    if !media.starts_with("image/") {
        return Err(ApiError::invalid(
            at,
            format!("{:?} is not an image type", short(media)),
        ));
    }
    if !fields.any(|f| f == "base64") {
        return Err(ApiError::invalid(at, "the data URL must be base64"));
    }
    decode(data, at)
}

/// Base64 (standard alphabet, padding optional; whitespace is not allowed), at
/// most [`MAX_IMAGE_BYTES`] decoded.
fn decode(data: &str, at: &str) -> Result<Vec<u8>, ApiError> {
    if data.len() / 4 * 3 > MAX_IMAGE_BYTES {
        return Err(ApiError::invalid(
            at,
            format!("the image is over {} MB", MAX_IMAGE_BYTES >> 20),
        ));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(data.trim_end())
        .map_err(|e| ApiError::invalid(at, format!("the image is not valid base64: {e}")))
}

fn remote(at: &str) -> ApiError {
    ApiError::invalid(
        at,
        "remote image URLs are not fetched: send the image as a base64 data URL \
         (data:image/png;base64,…)",
    )
}

/// At most 40 characters of a value quoted in an error.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(e: ApiError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn data_urls_decode_and_bad_ones_say_why() {
        let ok = openai_part(
            &json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}),
            "m",
        )
        .unwrap();
        assert_eq!(&ok[..4], b"\x89PNG");
        // Unpadded base64 is accepted, as browsers' encoders differ.
        assert_eq!(data_url("data:image/png;base64,aGk", "m").unwrap(), b"hi");
        for (url, want) in [
            (
                "https://example.com/a.png",
                "remote image URLs are not fetched",
            ),
            ("file:///etc/passwd", "not a data URL"),
            ("data:text/plain;base64,aGk=", "not an image type"),
            ("data:image/png,hi", "must be base64"),
            ("data:image/png;base64", "no comma"),
            ("data:image/png;base64,*&^%", "not valid base64"),
        ] {
            let e = msg(data_url(url, "messages[0].content[1]").unwrap_err());
            assert!(e.contains(want), "{url}: {e}");
            assert!(e.contains("messages[0].content[1]"), "{e}");
        }
        let e = msg(openai_part(&json!({"type": "image_url"}), "p").unwrap_err());
        assert!(e.contains("needs image_url.url"), "{e}");
    }

    #[test]
    fn anthropic_blocks_decode_and_bad_ones_say_why() {
        let b = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}});
        assert_eq!(anthropic_block(&b, "m").unwrap(), b"hi");
        for (source, want) in [
            (json!({"type": "url", "url": "https://x"}), "not fetched"),
            (json!({"type": "file"}), "expected base64"),
            (
                json!({"type": "base64", "media_type": "text/html", "data": "aGk="}),
                "not an image type",
            ),
            (
                json!({"type": "base64", "media_type": "image/png"}),
                "no base64 data",
            ),
        ] {
            let e =
                msg(anthropic_block(&json!({"type": "image", "source": source}), "m").unwrap_err());
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn oversized_and_too_many_images_are_refused() {
        let big = "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8);
        let e = msg(data_url(&format!("data:image/png;base64,{big}"), "m").unwrap_err());
        assert!(e.contains("over 20 MB"), "{e}");
        let mut imgs = Images::new();
        for _ in 0..MAX_IMAGES {
            imgs.push("m", vec![1]).unwrap();
        }
        let e = msg(imgs.push("m", vec![1]).unwrap_err());
        assert!(e.contains("at most 16 images"), "{e}");
        assert!(plain_text("a\u{FFFC}b", "t", true).is_err());
        assert_eq!(plain_text("a\u{FFFC}b", "t", false).unwrap(), "a\u{FFFD}b");
        assert_eq!(plain_text("ab", "t", true).unwrap(), "ab");
    }
}
