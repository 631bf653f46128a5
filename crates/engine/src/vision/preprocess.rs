//! Image preprocessing as transformers' PIL image processors do it: decode (PNG,
//! JPEG, WebP; EXIF orientation applied, as `load_image` does), to RGB (an alpha
//! channel composited over white with Pillow's integer formula), resized with
//! Pillow's resampling (`ImagingResample`: a separable filter whose support grows
//! with the downscale factor, one pass per axis in Pillow 13's order, 8-bit rounding
//! after each), rescaled (`x · 1/255`), normalised (`(x − mean) / std`) and laid out
//! channel-first in f32.
//!
//! Everything an image file or `preprocessor_config.json` says is checked: sizes
//! are bounded before anything is allocated, and every failure is one error naming
//! the file.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// The largest side an image file may have: far beyond any photo, small enough
/// that decoding it stays within [`MAX_DECODED_BYTES`].
pub const MAX_SIDE: u32 = 16_384;
/// The most memory decoding one image may take (a decompression bomb stops here).
pub const MAX_DECODED_BYTES: u64 = 512 << 20;
/// The largest image file read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Pillow's resampling filters (`resample` in `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.LANCZOS` (1): a 3-lobe windowed sinc.
    Lanczos,
    /// `Image.BILINEAR` (2): a triangle, Gemma 3's.
    Bilinear,
    /// `Image.BICUBIC` (3): Keys' cubic with a = −0.5.
    Bicubic,
    /// `Image.BOX` (4).
    Box,
    /// `Image.HAMMING` (5).
    Hamming,
}

impl Filter {
    /// The filter of PIL's enum value (NEAREST, 0, takes another path in Pillow and
    /// is not supported).
    fn from_pil(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    /// Pillow's filter functions (`Resample.c`), in f64 as there.
    fn weight(self, x: f64) -> f64 {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        };
        match self {
            Self::Box => f64::from(u8::from(x > -0.5 && x <= 0.5)),
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Self::Bicubic => {
                let (a, x) = (-0.5, x.abs());
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// How a model's processor turns an image into pixel values.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Output (height, width); `None`: kept as decoded (`do_resize` false).
    pub size: Option<(u32, u32)>,
    /// The resampling filter.
    pub filter: Filter,
    /// The factor `x` is multiplied by (`do_rescale`), usually 1/255.
    pub rescale: Option<f64>,
    /// Per channel `(mean, std)` (`do_normalize`).
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl Preprocess {
    /// A multimodal folder's `preprocessor_config.json` over Gemma 3's defaults for
    /// its tower's image size.
    pub fn of_folder(
        h: &crate::hf::HfFolder,
        cfg: &crate::models::siglip::VisionConfig,
    ) -> Result<Self> {
        let defaults = Self::gemma(cfg.image_size as u32, [0.5; 3], [0.5; 3]);
        let name = "preprocessor_config.json";
        match crate::source::read_folder_file(h.dir(), name, 1 << 20)? {
            Some(json) => Self::from_config(&h.dir().join(name), &json, &defaults),
            None => Ok(defaults),
        }
    }

    /// Gemma 3's processor for square images of `side` pixels: bilinear, 1/255, mean
    /// and std 0.5 (what an mmproj's `clip.vision.*` keys describe too).
    pub fn gemma(side: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            size: Some((side, side)),
            filter: Filter::Bilinear,
            rescale: Some(1.0 / 255.0),
            normalize: Some((mean, std)),
        }
    }

    /// `preprocessor_config.json` for [`Self::gemma`]'s preprocessing, as
    /// transformers' Gemma3ImageProcessor writes it (bilinear resize, rescale by
    /// 1/255, normalise, no pan-and-scan).
    pub fn gemma_json(
        side: u32,
        mean: [f32; 3],
        std: [f32; 3],
        tokens: usize,
    ) -> serde_json::Value {
        serde_json::json!({
            "image_processor_type": "Gemma3ImageProcessor",
            "processor_class": "Gemma3Processor",
            "do_convert_rgb": null,
            "do_resize": true,
            "size": {"height": side, "width": side},
            "resample": 2,
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": mean,
            "image_std": std,
            "do_pan_and_scan": null,
            "image_seq_length": tokens,
        })
    }

    /// Reads `preprocessor_config.json` (its text `json`, from `path`), over
    /// `defaults` for keys it leaves out or sets to null.
    pub fn from_config(path: &Path, json: &[u8], defaults: &Self) -> Result<Self> {
        let err = |key: &str, message: String| Error::Metadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| Error::BadFile {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        if !v.is_object() {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                message: "expected a JSON object".into(),
            });
        }
        let get = |key: &str| v.get(key).filter(|x| !x.is_null());
        let flag = |key: &str, default: bool| -> Result<bool> {
            match get(key) {
                None => Ok(default),
                Some(x) => x
                    .as_bool()
                    .ok_or_else(|| err(key, format!("expected true or false, found {x}"))),
            }
        };
        if flag("do_pan_and_scan", false)? {
            return Err(err(
                "do_pan_and_scan",
                "pan-and-scan crops are not supported".into(),
            ));
        }
        let mut p = defaults.clone();
        if !flag("do_resize", true)? {
            p.size = None;
        } else if let Some(size) = get("size") {
            let side = |k: &str| -> Result<u32> {
                size.get(k)
                    .and_then(serde_json::Value::as_u64)
                    .filter(|&n| n > 0 && n <= MAX_SIDE as u64)
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        err(
                            &format!("size.{k}"),
                            format!("expected 1 to {MAX_SIDE} pixels, found {size}"),
                        )
                    })
            };
            p.size = Some((side("height")?, side("width")?));
        }
        if let Some(r) = get("resample") {
            p.filter = r.as_u64().and_then(Filter::from_pil).ok_or_else(|| {
                err(
                    "resample",
                    format!("{r}: expected a PIL filter 1 to 5 (2 = bilinear)"),
                )
            })?;
        }
        if !flag("do_rescale", true)? {
            p.rescale = None;
        } else if let Some(r) = get("rescale_factor") {
            p.rescale = Some(
                r.as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| {
                        err(
                            "rescale_factor",
                            format!("expected a positive number, found {r}"),
                        )
                    })?,
            );
        }
        let triple = |key: &str, positive: bool| -> Result<Option<[f32; 3]>> {
            let Some(x) = get(key) else { return Ok(None) };
            let vals: Option<Vec<f32>> = match x {
                serde_json::Value::Array(a) => {
                    a.iter().map(|e| e.as_f64().map(|f| f as f32)).collect()
                }
                n => n.as_f64().map(|f| vec![f as f32; 3]),
            };
            match vals.as_deref() {
                Some(&[a, b, c])
                    if [a, b, c]
                        .iter()
                        .all(|f| f.is_finite() && (!positive || *f > 0.0)) =>
                {
                    Ok(Some([a, b, c]))
                }
                _ => Err(err(
                    key,
                    format!(
                        "expected three finite numbers{}, found {x}",
                        if positive { " above 0" } else { "" }
                    ),
                )),
            }
        };
        if !flag("do_normalize", true)? {
            p.normalize = None;
        } else {
            let (mean0, std0) = p.normalize.unwrap_or(([0.5; 3], [0.5; 3]));
            let mean = triple("image_mean", false)?.unwrap_or(mean0);
            let std = triple("image_std", true)?.unwrap_or(std0);
            p.normalize = Some((mean, std));
        }
        Ok(p)
    }

    /// Decodes an image file and preprocesses it: `[3, height, width]` f32 on the
    /// CPU.
    pub fn file(&self, path: &Path) -> Result<Tensor> {
        let bytes = crate::source::read_regular(path, MAX_FILE_BYTES)?;
        self.bytes(&bytes, path)
    }

    /// [`Preprocess::file`] for an image file's bytes (`origin` names it in errors).
    pub fn bytes(&self, bytes: &[u8], origin: &Path) -> Result<Tensor> {
        let img = decode(bytes, origin)?;
        self.pixels(&img, origin)
    }

    /// Preprocesses a decoded RGB image.
    pub fn pixels(&self, img: &Rgb, origin: &Path) -> Result<Tensor> {
        let img = match self.size {
            Some((h, w)) => resize(img, w as usize, h as usize, self.filter),
            None => img.clone(),
        };
        let (w, h) = (img.width, img.height);
        let mut out = vec![0f32; 3 * w * h];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut x = px[c] as f32;
                if let Some(r) = self.rescale {
                    x = (px[c] as f64 * r) as f32;
                }
                if let Some((mean, std)) = self.normalize {
                    x = (x - mean[c]) / std[c];
                }
                out[c * w * h + i] = x;
            }
        }
        Tensor::from_vec(out, (3, h, w), &Device::Cpu).map_err(|e| Error::BadFile {
            path: origin.to_path_buf(),
            message: format!("pixel values: {e}"),
        })
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width · height · 3` bytes.
    pub data: Vec<u8>,
}

/// Decodes a PNG, JPEG or WebP file (by its content, not its name) to RGB: EXIF
/// orientation applied; an alpha channel composited over white as transformers'
/// `convert_rgb` does; 16-bit samples reduced to their high byte as Pillow reads
/// them. Dimensions and decoding memory are bounded ([`MAX_SIDE`],
/// [`MAX_DECODED_BYTES`]).
pub fn decode(bytes: &[u8], origin: &Path) -> Result<Rgb> {
    use image::{DynamicImage, ImageDecoder, ImageReader};
    let bad = |message: String| Error::BadFile {
        path: origin.to_path_buf(),
        message,
    };
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("not readable: {e}")))?;
    if reader.format().is_none() {
        return Err(bad(
            "not an image this engine reads (PNG, JPEG or WebP)".into()
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Unsupported(_) => bad(format!(
            "not an image this engine reads (PNG, JPEG or WebP): {e}"
        )),
        e => bad(format!("not a readable image: {e}")),
    })?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(bad(format!("an empty image ({w}×{h})")));
    }
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("damaged image: {e}")))?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageRgb8(i) => i.into_raw(),
        DynamicImage::ImageLuma8(i) => i.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageRgba8(i) => over_white(
            i.into_raw()
                .chunks_exact(4)
                .map(|p| [p[0], p[1], p[2], p[3]]),
        ),
        DynamicImage::ImageLumaA8(i) => over_white(
            i.into_raw()
                .chunks_exact(2)
                .map(|p| [p[0], p[0], p[0], p[1]]),
        ),
        DynamicImage::ImageRgb16(i) => i.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageLuma16(i) => i
            .into_raw()
            .iter()
            .flat_map(|&v| [(v >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageRgba16(i) => over_white(i.into_raw().chunks_exact(4).map(|p| {
            [
                (p[0] >> 8) as u8,
                (p[1] >> 8) as u8,
                (p[2] >> 8) as u8,
                (p[3] >> 8) as u8,
            ]
        })),
        DynamicImage::ImageLumaA16(i) => over_white(i.into_raw().chunks_exact(2).map(|p| {
            let v = (p[0] >> 8) as u8;
            [v, v, v, (p[1] >> 8) as u8]
        })),
        other => other.to_rgb8().into_raw(),
    };
    Ok(Rgb {
        width,
        height,
        data,
    })
}

/// RGBA pixels composited over opaque white, as Pillow's `alpha_composite` computes
/// it in integers (`AlphaComposite.c`, 7 bits of precision), then RGB.
fn over_white(px: impl Iterator<Item = [u8; 4]>) -> Vec<u8> {
    const BITS: u32 = 7;
    let div255 = |a: u32| ((a >> 8) + a) >> 8;
    let mut out = Vec::new();
    for [r, g, b, a] in px {
        if a == 0 {
            out.extend_from_slice(&[255, 255, 255]);
            continue;
        }
        let a = a as u32;
        // Background alpha 255: out alpha is 255·255, so coef1 = a << BITS.
        let coef1 = a * 255 * 255 * (1 << BITS) / (255 * 255);
        let coef2 = 255 * (1 << BITS) - coef1;
        for c in [r, g, b] {
            let t = c as u32 * coef1 + 255 * coef2;
            out.push((div255(t + (0x80 << BITS)) >> BITS) as u8);
        }
    }
    out
}

/// Pillow's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One axis of Pillow's resampling: per output index, the first input index, the
/// count, and the weights in fixed point (`precompute_coeffs` then
/// `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // Pillow truncates toward zero after adding 0.5 (`(int)`), then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n)
                .map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let s = k * (1u32 << PRECISION_BITS) as f64;
                    if s < 0.0 {
                        (s - 0.5) as i32
                    } else {
                        (s + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: a fixed-point sum to a byte.
fn clip8(v: i32) -> u8 {
    if v >= 255 << PRECISION_BITS {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes like Pillow's `Image.resize(size, filter)` on an RGB image: a pass per
/// axis whose size changes, each rounded to 8 bits, horizontal first unless the
/// height shrinks by more than twice what the width does (Pillow 13's rule in
/// `ImagingResampleInner`: the passes do not commute once rounded).
pub fn resize(img: &Rgb, width: usize, height: usize, filter: Filter) -> Rgb {
    let shrink_h = img.height as i64 - height as i64;
    let shrink_w = img.width as i64 - width as i64;
    let horizontal_first = !(shrink_h > 0 && shrink_h > shrink_w * 2);
    let mut cur = img.clone();
    let mut h_done = false;
    if horizontal_first && width != img.width {
        cur = horizontal(&cur, width, filter);
        h_done = true;
    }
    if height != img.height {
        cur = vertical(&cur, height, filter);
    }
    if !h_done && width != img.width {
        cur = horizontal(&cur, width, filter);
    }
    cur
}

/// Pillow's horizontal 8-bit pass (every row; Pillow computes only the rows the
/// vertical pass reads, which gives the same bytes).
fn horizontal(img: &Rgb, width: usize, filter: Filter) -> Rgb {
    let coeffs = coefficients(img.width, width, filter);
    let mut data = vec![0u8; width * img.height * 3];
    for y in 0..img.height {
        let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        for (xx, (xmin, k)) in coeffs.iter().enumerate() {
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &kx) in k.iter().enumerate() {
                for c in 0..3 {
                    ss[c] += row[(xmin + x) * 3 + c] as i32 * kx;
                }
            }
            for c in 0..3 {
                data[(y * width + xx) * 3 + c] = clip8(ss[c]);
            }
        }
    }
    Rgb {
        width,
        height: img.height,
        data,
    }
}

/// Pillow's vertical 8-bit pass.
fn vertical(img: &Rgb, height: usize, filter: Filter) -> Rgb {
    let coeffs = coefficients(img.height, height, filter);
    let w = img.width;
    let mut data = vec![0u8; w * height * 3];
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..w * 3 {
            let mut ss = 1i32 << (PRECISION_BITS - 1);
            for (y, &ky) in k.iter().enumerate() {
                ss += img.data[(ymin + y) * w * 3 + x] as i32 * ky;
            }
            data[yy * w * 3 + x] = clip8(ss);
        }
    }
    Rgb {
        width: w,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// A 37×29 test pattern with no symmetry to hide a wrong index.
    fn pattern() -> Rgb {
        let (w, h) = (37usize, 29usize);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data.push(((x * 37 + y * 91 + c * 53 + x * y * 7) % 256) as u8);
                }
            }
        }
        Rgb {
            width: w,
            height: h,
            data,
        }
    }

    /// Pillow 13.0.0's `Image.resize((w, h), resample=f)` of [`pattern`]: the
    /// SHA-256 of its bytes (down, up, one axis only, both ways at once, and the
    /// shapes Pillow resizes vertically first), for every filter this file
    /// implements.
    const PILLOW: &[(u64, usize, usize, &str)] = &[
        (
            1,
            16,
            12,
            "b9e7b1b19b8f7c3875435e54768ff0757fa39b7e0f75e0bfa056b28a554b19dd",
        ),
        (
            1,
            50,
            40,
            "a9917857db3c05abd4d859811ca14b873ae04fd635b5e1d31b5044752dad60fd",
        ),
        (
            1,
            37,
            10,
            "e40bf2d952fd41b22a3c352d61b531cf6c68601f09d90ef24c6bd75bbae23483",
        ),
        (
            1,
            9,
            29,
            "7401d77ddff5805629aeb9c518efbd07db63b76f1a58f786fba92657e3be3fe8",
        ),
        (
            1,
            128,
            3,
            "a23ff72bc9d2fa85c920545d7212893241cf43552476e0334582c3fce3730fce",
        ),
        (
            2,
            16,
            12,
            "3b6b6ead88b0c9d7cd6f346995a9585c87b5dcc989d61dacf70995e1457a143a",
        ),
        (
            2,
            50,
            40,
            "0af0806000e42e385c47bf585ea1e33fd6ade6ae3ff359e27c91645216c50b94",
        ),
        (
            2,
            37,
            10,
            "44fcbe59ab2514d63199aee293ee3f7522b9a66d8283c0046883536564fdc108",
        ),
        (
            2,
            9,
            29,
            "0173ef6510904fe7ce6f0ca22658f94b27c43d6b7bce8efad25513661a004d90",
        ),
        (
            2,
            128,
            3,
            "e87542fc87b892d271d27185508ac3d50adba3a9136c2d90ece19d791d2fc3f3",
        ),
        (
            3,
            16,
            12,
            "41b673d4af58aef8baba606ba73b59638544ff036011bfa31bc0df6ff581a6ff",
        ),
        (
            3,
            50,
            40,
            "2a0b27de45cb81912e2d88206e96c731da170db8f39ee7aa48fe774ce666b27f",
        ),
        (
            3,
            37,
            10,
            "c872c14f0362e2ef119658c82027554cfb3142ee6483a9872898868b85bf1928",
        ),
        (
            3,
            9,
            29,
            "13c154e8cee79a03ea3e9184f917e1c96b4780916eb8072fd612797756b876fd",
        ),
        (
            3,
            128,
            3,
            "6d6a309a0f64b6ac89a546217191449f489c11a45c3f1bfcc1e1581b92598b05",
        ),
        (
            4,
            16,
            12,
            "cd4943e68c5778ab40f962070286fc5750c96b094779dba6e331699abcd56dfb",
        ),
        (
            4,
            50,
            40,
            "908b4191a1eb45ad517a964a46a64c0d817ed36ae63e8248b01e1d9af095d350",
        ),
        (
            4,
            37,
            10,
            "fceab324cac58dff9496ca954bb5d8377089b52e47e99273d0974ef297d43cd5",
        ),
        (
            4,
            9,
            29,
            "f633d83c9464b0c7a1661253e810c96a739e5b155890d4eec45ea0d0d282ad64",
        ),
        (
            4,
            128,
            3,
            "38897d8c8aa89bdce120734bbc5d0b51067cbeb284c0ad16710d53b969bf9828",
        ),
        (
            5,
            16,
            12,
            "10e42ff80b6011261a9a54af131b6c51425ae43158510eda3bc1bd08813949e3",
        ),
        (
            5,
            50,
            40,
            "c3a298da361d8c0ad1d2bf8f74bc395971611f84b32deca36f007af07ae788e3",
        ),
        (
            5,
            37,
            10,
            "803eddfb041aa7d722ee1113a274211f435b206895cbec50c060baf1cf917d18",
        ),
        (
            5,
            9,
            29,
            "87b2284bab0c65fcda547352be59e67632777788c0eb33c7b1d307ba1f352e9a",
        ),
        (
            5,
            128,
            3,
            "90d58f77b99a1622a824b3545362dea1f8bf488e0eeaab8898086af3e5efb612",
        ),
        (
            1,
            30,
            5,
            "5475350e6ec2b5bda71b2a2cf038ec3e2d5bbc6f1b603dd7d35fa5ffbc5cf6d9",
        ),
        (
            1,
            2,
            20,
            "ab6ec8537f6bd8a81ef93f1a9761fc19e859ed9f789b9060f981e8f7be47f31a",
        ),
        (
            2,
            30,
            5,
            "cbbcddeedceba6a013195af1d602f33fe71fd43a7a05dd329aacf4cf581be1b6",
        ),
        (
            2,
            2,
            20,
            "8363277b3b06f504d2a725275e301391ecdde59c2a0271721817962b612a3c8e",
        ),
        (
            3,
            30,
            5,
            "53ff49d55c074b81d6f2d99c581f5d07c60010643ae790f7a97ebeacf4edc986",
        ),
        (
            3,
            2,
            20,
            "a8187ace57a0633e8250035a7a7f7b677c4e08dc208a2c7e101eb00f1d738470",
        ),
        (
            4,
            30,
            5,
            "29259a33bc4f1ec8db86eefadf32a38b780be1d2b554ebb4013a155d5571a1b6",
        ),
        (
            4,
            2,
            20,
            "33c8716cc6a6be76edcf9487639de2beb687fbb1ce067c135cd5570af382b828",
        ),
        (
            5,
            30,
            5,
            "124a2fbaec81ab29e7c2d574ee6a79c81f0f04a3fbdfd19d6b0abbdbd0e64055",
        ),
        (
            5,
            2,
            20,
            "1a65f7d82f7c9d1b7bb8697fafadd64f92a2a77f9b5f0b01bf2860f5bd6fd360",
        ),
    ];

    #[test]
    fn resize_is_byte_identical_to_pillow() {
        let img = pattern();
        for &(f, w, h, want) in PILLOW {
            let filter = Filter::from_pil(f).unwrap();
            let out = resize(&img, w, h, filter);
            let got = format!("{:x}", sha2::Sha256::digest(&out.data));
            assert_eq!(got, want, "{filter:?} to {w}×{h}");
        }
    }

    /// Pillow's `alpha_composite` over white, then RGB (transformers' `convert_rgb`).
    #[test]
    fn alpha_is_composited_over_white_as_pillow_does() {
        let px = [
            [10, 200, 30, 0],
            [10, 200, 30, 1],
            [10, 200, 30, 127],
            [10, 200, 30, 128],
            [250, 3, 99, 254],
            [0, 0, 0, 255],
            [77, 88, 99, 200],
        ];
        let want = [
            255, 255, 255, 254, 255, 254, 133, 228, 143, 132, 227, 142, 250, 4, 100, 0, 0, 0, 115,
            124, 133,
        ];
        assert_eq!(over_white(px.into_iter()), want);
    }

    #[test]
    fn bad_images_and_configs_are_one_clear_error() {
        let p = Path::new("x.png");
        for (bytes, want) in [
            (&b""[..], "not an image"),
            (&b"GIF89a...."[..], "not an image"),
            (&b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..], "x.png"),
        ] {
            let e = decode(bytes, p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("x.png"), "{e}");
        }
        let d = Preprocess::gemma(64, [0.5; 3], [0.5; 3]);
        for (json, want) in [
            (r#"{"resample": 0}"#, "resample"),
            (r#"{"size": {"height": 0, "width": 64}}"#, "size.height"),
            (r#"{"image_std": [0.5, 0, 0.5]}"#, "image_std"),
            (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
            (r#"{"do_pan_and_scan": true}"#, "do_pan_and_scan"),
            (r#"[1]"#, "object"),
        ] {
            let e = Preprocess::from_config(Path::new("pp.json"), json.as_bytes(), &d)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("pp.json"), "{json}: {e}");
        }
    }

    /// A PNG whose header claims 100000×100000 pixels is refused before any pixel
    /// memory is taken.
    #[test]
    fn a_decompression_bomb_is_refused_by_its_header() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let e = decode(&png, Path::new("bomb.png")).unwrap_err().to_string();
        assert!(
            e.contains("bomb.png") && e.to_lowercase().contains("limit"),
            "{e}"
        );
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}
