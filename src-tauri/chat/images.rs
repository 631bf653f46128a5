//! Images in the app's chats: what the webview may send with a message (checked
//! here, before anything is stored or decoded), and where a stored chat keeps its
//! images (files beside the library database, one folder per chat, one per message).
//! The engine decodes and preprocesses them (`LoadedModel::image_from_bytes`); this
//! module only bounds, recognises and stores the bytes.

use super::types::{ImageFile, ImageUpload, ShownImage};
use crate::error::{existing, CommandError, CommandResult};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest image file a message takes (a phone's photo is 2-12 MB; the model sees
/// it at 896 x 896 pixels whatever its size).
pub const MAX_IMAGE_BYTES: usize = 20 << 20;
/// Most images in one message (each takes its own prompt tokens: 256 for Gemma 3).
pub const MAX_PER_MESSAGE: usize = 8;
/// Most images one stored chat keeps, and their bytes together: what reopening a
/// chat reads and the disk a chat takes stay bounded.
pub const MAX_PER_CHAT: usize = 64;
/// Bytes of images one stored chat keeps at most.
pub const MAX_CHAT_BYTES: u64 = 256 << 20;
/// Largest preview the front end may store with an image (it makes ~20-60 KB ones).
pub const MAX_THUMB_BYTES: usize = 256 << 10;
/// Longest image name kept, in characters.
const MAX_NAME_CHARS: usize = 120;

/// The image formats the engine decodes, told by their first bytes (never by the
/// name, which the webview chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Webp,
}

impl Format {
    /// The format of `bytes`, if it is one the engine decodes.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }
}

/// An image of a message, checked: its name (for showing), bytes and preview.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// A display name (no folders, no control characters, bounded).
    pub name: String,
    /// The file's bytes, a PNG, JPEG or WebP of at most [`MAX_IMAGE_BYTES`]
    /// (shared: the model decodes them, the history stores them).
    pub bytes: Arc<[u8]>,
    /// Its format.
    pub format: Format,
    /// The front end's preview, a `data:image/...;base64,` URL.
    pub thumb: String,
}

/// `name` as shown: its last path component, without control characters, at most
/// [`MAX_NAME_CHARS`] characters ("image" when nothing is left).
pub fn display_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    match clean.trim() {
        "" => "image".into(),
        t => t.into(),
    }
}

/// Why `bytes` named `name` is refused, if it is: too large or not an image the
/// engine decodes.
fn refuse_bytes(name: &str, bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Some(format!(
            "{name}: {:.1} MB; images of at most {} MB are sent",
            bytes.len() as f64 / (1 << 20) as f64,
            MAX_IMAGE_BYTES >> 20
        ));
    }
    Format::sniff(bytes)
        .is_none()
        .then(|| format!("{name}: not a PNG, JPEG or WebP image"))
}

/// A preview from the webview: a base64 data URL of a PNG, JPEG or WebP, bounded.
fn check_thumb(name: &str, thumb: &str) -> CommandResult<()> {
    let bad = |why: &str| CommandError::Invalid(format!("{name}: its preview {why}"));
    if thumb.len() > MAX_THUMB_BYTES {
        return Err(bad(&format!("is over {} KB", MAX_THUMB_BYTES >> 10)));
    }
    let data = ["png", "jpeg", "webp"]
        .iter()
        .find_map(|t| thumb.strip_prefix(&format!("data:image/{t};base64,")))
        .ok_or_else(|| bad("is not a PNG, JPEG or WebP data URL"))?;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad("is not valid base64"))?;
    Ok(())
}

/// The images the webview sent with a message, checked and decoded from base64: at
/// most [`MAX_PER_MESSAGE`], each a PNG, JPEG or WebP of at most
/// [`MAX_IMAGE_BYTES`] with a bounded preview. The first problem is the error, in
/// one line naming the image.
pub fn check(uploads: Vec<ImageUpload>) -> CommandResult<Vec<Attachment>> {
    if uploads.len() > MAX_PER_MESSAGE {
        return Err(CommandError::Invalid(format!(
            "{} images: at most {MAX_PER_MESSAGE} go with one message",
            uploads.len()
        )));
    }
    // Base64 of the largest image, with its padding: longer text is refused unread.
    let max_text = MAX_IMAGE_BYTES.div_ceil(3) * 4;
    uploads
        .into_iter()
        .map(|u| {
            let name = display_name(&u.name);
            if u.data.len() > max_text {
                return Err(CommandError::Invalid(format!(
                    "{name}: over {} MB; images of at most {} MB are sent",
                    MAX_IMAGE_BYTES >> 20,
                    MAX_IMAGE_BYTES >> 20
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(u.data.as_bytes())
                .map_err(|_| CommandError::Invalid(format!("{name}: not valid base64")))?;
            if let Some(why) = refuse_bytes(&name, &bytes) {
                return Err(CommandError::Invalid(why));
            }
            check_thumb(&name, &u.thumb)?;
            Ok(Attachment {
                format: Format::sniff(&bytes).expect("checked above"),
                name,
                bytes: bytes.into(),
                thumb: u.thumb,
            })
        })
        .collect()
}

/// Reads the image file at `path` (a file dropped on the window) for the webview to
/// preview and send: a regular file, read at most [`MAX_IMAGE_BYTES`] + 1 bytes
/// deep, and a PNG, JPEG or WebP by its first bytes; anything else is refused,
/// naming the file.
pub fn read_file(path: &str) -> CommandResult<ImageFile> {
    let p = existing(path)?;
    let bad = |m: String| CommandError::Invalid(format!("{path}: {m}"));
    let meta = std::fs::metadata(&p).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a file".into()));
    }
    let name = display_name(&p.file_name().unwrap_or_default().to_string_lossy());
    // Bounded read: the file may grow after any check of its size.
    let mut bytes = Vec::new();
    std::fs::File::open(&p)
        .and_then(|f| f.take(MAX_IMAGE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if let Some(why) = refuse_bytes(path, &bytes) {
        return Err(CommandError::Invalid(why));
    }
    Ok(ImageFile {
        name,
        data: base64::engine::general_purpose::STANDARD.encode(&bytes),
    })
}

/// A stored image read back: as the chat shows it, and its bytes for the model.
pub struct Kept {
    /// Its name and preview.
    pub shown: ShownImage,
    /// The file's bytes.
    pub bytes: Arc<[u8]>,
}

/// One stored image, as a message's `images.json` lists it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    /// Its file in the message's folder (`0.png`, ...).
    file: String,
    thumb: String,
}

/// The images of stored chats: `<dir>/<chat id>/<message index>/` holds a
/// message's files and `images.json` (name, file, preview of each, in order).
/// Message indices are positions in the stored chat, as `Library::chat` lists
/// them (the system prompt counts); chats only lose messages from the end
/// (regenerate, edit), so an index keeps naming the same message.
pub struct ImageStore {
    dir: PathBuf,
}

const MANIFEST: &str = "images.json";

fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Removes `path` and what it holds; a missing folder is not an error.
fn remove_dir(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

impl ImageStore {
    /// Images kept under `dir` (created when the first is stored).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn chat_dir(&self, chat: i64) -> PathBuf {
        self.dir.join(chat.to_string())
    }

    /// The message folders of `chat` by index, in order.
    fn messages(&self, chat: i64) -> Vec<(usize, PathBuf)> {
        let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(self.chat_dir(chat))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let i = e.file_name().to_str()?.parse().ok()?;
                        Some((i, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The images of message `index` of `chat`, read back bounded; none when its
    /// listing is missing or damaged.
    fn listed(&self, dir: &Path) -> Vec<Stored> {
        let limit = (MAX_PER_MESSAGE * (MAX_THUMB_BYTES + 1024)) as u64;
        let mut text = Vec::new();
        let read = std::fs::File::open(dir.join(MANIFEST))
            .and_then(|f| f.take(limit).read_to_end(&mut text));
        match read {
            Ok(_) => serde_json::from_slice::<Vec<Stored>>(&text)
                .unwrap_or_default()
                .into_iter()
                .take(MAX_PER_MESSAGE)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Keeps `images` as those of message `index` of `chat` (replacing any it had),
    /// refused when the chat would keep more than [`MAX_PER_CHAT`] images or
    /// [`MAX_CHAT_BYTES`] bytes of them.
    pub fn save(&self, chat: i64, index: usize, images: &[Attachment]) -> Result<(), String> {
        if images.is_empty() {
            return Ok(());
        }
        let (mut count, mut bytes) = (images.len(), 0u64);
        for (i, dir) in self.messages(chat) {
            if i == index {
                continue;
            }
            for s in self.listed(&dir) {
                count += 1;
                bytes += std::fs::metadata(dir.join(&s.file)).map_or(0, |m| m.len());
            }
        }
        bytes += images.iter().map(|a| a.bytes.len() as u64).sum::<u64>();
        if count > MAX_PER_CHAT || bytes > MAX_CHAT_BYTES {
            return Err(format!(
                "this chat would keep {count} images ({} MB); a chat keeps at most {MAX_PER_CHAT} images and {} MB of them: start a new chat to send more",
                bytes >> 20,
                MAX_CHAT_BYTES >> 20
            ));
        }
        let dir = self.chat_dir(chat).join(index.to_string());
        remove_dir(&dir)?;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut listing = Vec::new();
        for (k, a) in images.iter().enumerate() {
            let file = format!("{k}.{}", a.format.extension());
            let path = dir.join(&file);
            std::fs::write(&path, &a.bytes).map_err(io(&path))?;
            listing.push(Stored {
                name: a.name.clone(),
                file,
                thumb: a.thumb.clone(),
            });
        }
        // The listing last, whole or not at all: files without one are not shown.
        let manifest = dir.join(MANIFEST);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let text = serde_json::to_vec(&listing).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &manifest).map_err(io(&manifest))
    }

    /// The images of each of the first `messages` messages of `chat`, read back
    /// within the chat's bounds, one list per message. An image whose file is
    /// missing, damaged or past the bounds is left out: the chat shows what the
    /// model is given again, no more.
    pub fn load(&self, chat: i64, messages: usize) -> Vec<Vec<Kept>> {
        let mut out: Vec<Vec<Kept>> = (0..messages).map(|_| Vec::new()).collect();
        let (mut count, mut total) = (0usize, 0u64);
        for (i, dir) in self.messages(chat) {
            let Some(slot) = out.get_mut(i) else {
                continue;
            };
            for s in self.listed(&dir) {
                // The listing names a file of this folder, nothing else.
                let plain = Path::new(&s.file).file_name() == Some(s.file.as_ref());
                if !plain || count >= MAX_PER_CHAT || check_thumb(&s.name, &s.thumb).is_err() {
                    continue;
                }
                let mut bytes = Vec::new();
                let read = std::fs::File::open(dir.join(&s.file))
                    .and_then(|f| f.take(MAX_IMAGE_BYTES as u64 + 1).read_to_end(&mut bytes));
                let len = bytes.len() as u64;
                if read.is_err()
                    || refuse_bytes(&s.name, &bytes).is_some()
                    || total + len > MAX_CHAT_BYTES
                {
                    continue;
                }
                (count, total) = (count + 1, total + len);
                slot.push(Kept {
                    shown: ShownImage {
                        name: display_name(&s.name),
                        thumb: s.thumb,
                    },
                    bytes: bytes.into(),
                });
            }
        }
        out
    }

    /// Forgets the images of messages `keep` and later of `chat` (they were
    /// truncated away).
    pub fn truncate(&self, chat: i64, keep: usize) -> Result<(), String> {
        for (i, dir) in self.messages(chat) {
            if i >= keep {
                remove_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// Deletes every image of `chat`: the chat was deleted, or its id is new (a
    /// deleted chat's id can be given again; its images must not come back).
    pub fn delete(&self, chat: i64) -> Result<(), String> {
        remove_dir(&self.chat_dir(chat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest";
    const THUMB: &str = "data:image/png;base64,iVBORw0KGgo=";

    fn upload(name: &str, bytes: &[u8]) -> ImageUpload {
        ImageUpload {
            name: name.into(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            thumb: THUMB.into(),
        }
    }

    fn refused(uploads: Vec<ImageUpload>) -> String {
        match check(uploads) {
            Err(CommandError::Invalid(m)) => {
                assert!(!m.contains('\n'), "{m}");
                m
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uploads_are_bounded_and_recognised_by_their_bytes() {
        let ok = check(vec![upload("/home/me/a\u{7}.png", PNG)]).unwrap();
        assert_eq!((ok[0].name.as_str(), ok[0].format), ("a.png", Format::Png));
        assert_eq!(Format::sniff(b"\xff\xd8\xff\xe0"), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(display_name("C:\\x\\"), "image");
        assert_eq!(display_name(&"é".repeat(500)).chars().count(), 120);

        let many = (0..9).map(|i| upload(&format!("{i}.png"), PNG)).collect();
        assert!(refused(many).contains("at most 8"));
        assert!(refused(vec![upload("notes.png", b"hello")])
            .contains("notes.png: not a PNG, JPEG or WebP"));
        let big = [PNG, &vec![0u8; MAX_IMAGE_BYTES]].concat();
        assert!(refused(vec![upload("big.png", &big)]).contains("at most 20 MB"));
        let mut huge = upload("huge.png", PNG);
        huge.data = "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8);
        assert!(refused(vec![huge]).contains("huge.png: over 20 MB"));
        let mut garbled = upload("g.png", PNG);
        garbled.data = "!!!!".into();
        assert!(refused(vec![garbled]).contains("g.png: not valid base64"));
        for thumb in [
            "javascript:alert(1)",
            "data:image/svg+xml;base64,AAAA",
            "data:image/png;base64,@@",
        ] {
            let mut u = upload("t.png", PNG);
            u.thumb = thumb.into();
            assert!(refused(vec![u]).contains("t.png: its preview"), "{thumb}");
        }
        let mut fat = upload("f.png", PNG);
        fat.thumb = format!("data:image/png;base64,{}", "A".repeat(MAX_THUMB_BYTES));
        assert!(refused(vec![fat]).contains("over 256 KB"));
    }

    #[test]
    fn dropped_files_are_read_only_when_they_are_images() {
        let d = unicorn_test_support::scratch("app-image-read");
        let png = unicorn_test_support::tiny("gemma3_vision").join("image.png");
        let read = read_file(&png.display().to_string()).unwrap();
        assert_eq!(read.name, "image.png");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(read.data)
            .unwrap();
        assert_eq!(bytes, std::fs::read(&png).unwrap());
        let text = d.join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        let big = d.join("big.png");
        std::fs::write(&big, [PNG, &vec![0u8; MAX_IMAGE_BYTES]].concat()).unwrap();
        for (path, why) in [
            (text.display().to_string(), "not a PNG, JPEG or WebP image"),
            (big.display().to_string(), "at most 20 MB"),
            (d.display().to_string(), "not a file"),
            ("relative.png".into(), "absolute"),
            ("/dev/zero".into(), "refused"),
        ] {
            match read_file(&path) {
                Err(CommandError::Invalid(m)) => assert!(m.contains(why), "{path}: {m}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn stored_images_follow_their_messages_and_are_bounded() {
        let d = unicorn_test_support::scratch("app-image-store");
        let store = ImageStore::new(d.join("chat-images"));
        let a = check(vec![upload("a.png", PNG), upload("b.png", PNG)]).unwrap();
        store.save(7, 1, &a).unwrap();
        store.save(7, 3, &a[..1]).unwrap();
        let shown = store.load(7, 4);
        let names = |v: &[Kept]| v.iter().map(|k| k.shown.name.clone()).collect::<Vec<_>>();
        assert_eq!(shown.len(), 4);
        assert_eq!(names(&shown[1]), ["a.png", "b.png"]);
        assert_eq!(names(&shown[3]), ["a.png"]);
        assert!(shown[0].is_empty() && shown[2].is_empty());
        assert_eq!(shown[1][0].shown.thumb, THUMB);
        assert_eq!(&shown[1][0].bytes[..], PNG);
        // Fewer messages than folders (a damaged store): the extra ones are not shown.
        assert_eq!(store.load(7, 2).len(), 2);
        // A damaged listing shows nothing, a file that is gone or was changed into
        // something else is left out, a listing naming a file elsewhere is not
        // followed; nothing breaks.
        std::fs::write(d.join("chat-images/7/3").join(MANIFEST), "{").unwrap();
        assert!(store.load(7, 4)[3].is_empty());
        std::fs::write(d.join("chat-images/7/1/1.png"), "text now").unwrap();
        assert_eq!(names(&store.load(7, 4)[1]), ["a.png"]);
        let outside = r#"[{"name":"x.png","file":"../1/0.png","thumb":"data:image/png;base64,iVBORw0KGgo="}]"#;
        std::fs::create_dir_all(d.join("chat-images/7/2")).unwrap();
        std::fs::write(d.join("chat-images/7/2").join(MANIFEST), outside).unwrap();
        assert!(store.load(7, 4)[2].is_empty());

        store.truncate(7, 2).unwrap();
        assert!(store.load(7, 4)[3].is_empty());
        assert_eq!(store.load(7, 4)[1].len(), 1);
        store.delete(7).unwrap();
        assert!(!d.join("chat-images/7").exists());
        store.delete(7).unwrap();

        // At most 64 images a chat.
        let eight = check((0..8).map(|i| upload(&format!("{i}.png"), PNG)).collect()).unwrap();
        for m in 0..8 {
            store.save(9, m * 2, &eight).unwrap();
        }
        let e = store.save(9, 99, &a).unwrap_err();
        assert!(e.contains("at most 64 images") && !e.contains('\n'), "{e}");
        // Replacing a message's images counts them once.
        store.save(9, 0, &a).unwrap();
        std::fs::remove_dir_all(&d).ok();
    }
}
