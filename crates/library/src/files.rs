//! A model's files on disk: how much room they take and deleting them. What one
//! model is on disk: a `.gguf` file with, for a split GGUF (`-00001-of-00003`), its
//! sibling parts; an HF model folder; and for a model in the HF cache
//! (`models--org--name/snapshots/<commit>/...`), the whole repository folder with its
//! blobs. Deleting happens only inside the folders the caller allows (the app's
//! models folder and the HF cache), checked on the real paths (links resolved, so a
//! link cannot lead the deletion elsewhere), unless the user confirmed the path.

use crate::{sql, Library};
use serde::Serialize;
use std::path::{Component, Path, PathBuf};
use unicorn_engine::{Error, Result};

/// What deleting a model would remove.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DeletionPlan {
    /// The model as recorded.
    pub path: String,
    /// The files and folders removed (links resolved).
    pub targets: Vec<String>,
    /// Bytes freed.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub bytes: u64,
    /// Whether any target lies outside the allowed folders (deleting it needs the
    /// user's explicit confirmation).
    pub outside: bool,
}

/// `name-00001-of-00003.gguf` → (`name`, 3).
fn split_parts(file_name: &str) -> Option<(&str, u32)> {
    let stem = file_name
        .strip_suffix(".gguf")
        .or_else(|| file_name.strip_suffix(".GGUF"))?;
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let ok = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(index) || !ok(total) {
        return None;
    }
    let total: u32 = total.parse().ok()?;
    (total >= 1).then_some((prefix, total))
}

/// The HF cache repository folder (`.../models--org--name`) holding `path`, when
/// `path` is inside its `snapshots`.
fn hf_repo_folder(path: &Path) -> Option<PathBuf> {
    let comps: Vec<Component<'_>> = path.components().collect();
    for i in (0..comps.len()).rev() {
        let Component::Normal(name) = comps[i] else {
            continue;
        };
        let name = name.to_string_lossy();
        if name.starts_with("models--")
            && name.len() > "models--".len()
            && matches!(comps.get(i + 1), Some(Component::Normal(s)) if *s == "snapshots")
        {
            return Some(comps[..=i].iter().collect());
        }
    }
    None
}

/// What one model is on disk (paths as given, links not resolved): see the module
/// documentation. Only what exists is named.
pub fn deletion_targets(model: &Path) -> Vec<PathBuf> {
    if let Some(repo) = hf_repo_folder(model) {
        return vec![repo];
    }
    if let (Some(dir), Some((prefix, total))) = (
        model.parent(),
        model
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(split_parts),
    ) {
        let ext = model.extension().and_then(|e| e.to_str()).unwrap_or("gguf");
        let parts: Vec<PathBuf> = (1..=total)
            .map(|i| dir.join(format!("{prefix}-{i:05}-of-{total:05}.{ext}")))
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect();
        if !parts.is_empty() {
            return parts;
        }
    }
    if std::fs::symlink_metadata(model).is_ok() {
        vec![model.to_path_buf()]
    } else {
        Vec::new()
    }
}

/// Bytes taken by `path`: a file's length (a link followed: an HF snapshot's file
/// counts its blob), or the regular files under a folder, links not followed (an HF
/// repository folder counts its blobs once, not its snapshot links). 0 if absent.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Bytes deleting the model at `model` would free: [`disk_usage`] of its
/// [`deletion_targets`].
pub fn model_disk_usage(model: &Path) -> u64 {
    deletion_targets(model).iter().map(|p| disk_usage(p)).sum()
}

/// `path` with links resolved: the path itself if it exists, else its parent's
/// real path joined with its name.
fn real(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let parent = std::fs::canonicalize(path.parent()?).ok()?;
        Some(parent.join(path.file_name()?))
    })
}

/// Whether `target` (a real path) lies strictly inside one of `roots` (real paths).
fn inside(target: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| target != r && target.starts_with(r))
}

fn refuse<T>(model: &Path, message: impl std::fmt::Display) -> Result<T> {
    Err(Error::BadFile {
        path: model.to_path_buf(),
        message: message.to_string(),
    })
}

/// What deleting the model at `model` would remove, and whether it lies outside
/// `allowed_roots`. Refused: a path that is not absolute, that is not there, that is
/// not a model (a `.gguf` file, a folder with `config.json`, or a file in an HF
/// cache snapshot), or whose files would include an allowed folder, the home folder
/// or the file system root.
pub fn deletion_plan(model: &Path, allowed_roots: &[PathBuf]) -> Result<DeletionPlan> {
    if !model.is_absolute() {
        return refuse(model, "give an absolute path");
    }
    if std::fs::symlink_metadata(model).is_err() {
        return refuse(model, "no such file or folder");
    }
    let is_gguf = !model.is_dir()
        && model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let is_folder = model.is_dir() && model.join("config.json").is_file();
    let in_hf = hf_repo_folder(model).is_some();
    if !is_gguf && !is_folder && !in_hf {
        return refuse(
            model,
            "not a model file or folder (a .gguf file or a folder with config.json); not deleted",
        );
    }
    let roots: Vec<PathBuf> = allowed_roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let mut protected = roots.clone();
    protected.push(PathBuf::from("/"));
    if let Some(home) = std::env::var_os("HOME").and_then(|h| std::fs::canonicalize(h).ok()) {
        protected.push(home);
    }
    let mut targets = Vec::new();
    let mut bytes = 0;
    let mut outside = false;
    for t in deletion_targets(model) {
        let Some(r) = real(&t) else {
            return refuse(
                model,
                format!("{}: cannot resolve its real path", t.display()),
            );
        };
        if protected.iter().any(|p| p.starts_with(&r)) {
            return refuse(
                model,
                format!(
                    "{} holds the app's folders or your home folder; not deleted",
                    r.display()
                ),
            );
        }
        outside |= !inside(&r, &roots);
        bytes += disk_usage(&r);
        targets.push(r.display().to_string());
    }
    if targets.is_empty() {
        return refuse(model, "no such file or folder");
    }
    Ok(DeletionPlan {
        path: model.display().to_string(),
        targets,
        bytes,
        outside,
    })
}

impl Library {
    /// Deletes the files of the model at `model` (see [`deletion_plan`]) and the
    /// library rows of every model among them. Files outside `allowed_roots` (links
    /// resolved) are deleted only when `confirm_outside` is true (the user confirmed
    /// that path); otherwise nothing is deleted and the error says why. Returns the
    /// bytes freed.
    pub fn delete_model_files(
        &self,
        model: &Path,
        allowed_roots: &[PathBuf],
        confirm_outside: bool,
    ) -> Result<u64> {
        let plan = deletion_plan(model, allowed_roots)?;
        if plan.outside && !confirm_outside {
            return refuse(
                model,
                format!(
                    "{} is outside the app's models folder and the Hugging Face cache; \
                     not deleted without your confirmation",
                    plan.targets.join(", ")
                ),
            );
        }
        let targets: Vec<PathBuf> = plan.targets.iter().map(PathBuf::from).collect();
        // Every recorded model among the files goes from the library with them.
        let gone: Vec<String> = self
            .list()?
            .into_iter()
            .map(|e| e.path)
            .filter(|p| {
                let lexical = deletion_targets(Path::new(p));
                Path::new(p) == model
                    || real(Path::new(p)).is_some_and(|r| targets.iter().any(|t| r.starts_with(t)))
                    || lexical
                        .iter()
                        .filter_map(|l| real(l))
                        .any(|r| targets.iter().any(|t| r.starts_with(t)))
            })
            .collect();
        for t in &targets {
            let meta = match std::fs::symlink_metadata(t) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        path: t.clone(),
                        source,
                    })
                }
            };
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(t)
            } else {
                std::fs::remove_file(t)
            };
            removed.map_err(|source| Error::Io {
                path: t.clone(),
                source,
            })?;
        }
        // A link the model was reached through (now dangling) goes too.
        if std::fs::symlink_metadata(model).is_ok_and(|m| m.file_type().is_symlink())
            && !model.exists()
        {
            std::fs::remove_file(model).ok();
        }
        // The HF cache's lock folder of a deleted repository.
        for t in &targets {
            if let (Some(name), Some(cache)) = (t.file_name(), t.parent()) {
                if name.to_string_lossy().starts_with("models--") {
                    std::fs::remove_dir_all(cache.join(".locks").join(name)).ok();
                }
            }
        }
        for p in gone {
            self.conn
                .execute("DELETE FROM models WHERE path = ?1", rusqlite::params![p])
                .map_err(sql(self.path()))?;
        }
        Ok(plan.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("unicorn-files-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        Tmp(std::fs::canonicalize(&d).unwrap())
    }
    fn write(p: &Path, n: usize) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![7u8; n]).unwrap();
    }
    /// Records a row for `p` without reading it (the test files are not models).
    fn record(lib: &Library, p: &Path) {
        lib.conn
            .execute(
                "INSERT INTO models (path, source, format, size_bytes, architecture, quantization, parameters, added_at)
                 VALUES (?1, 'imported', 'gguf', 1, 'llama', 'Q4_0', 1, 1)",
                rusqlite::params![p.display().to_string()],
            )
            .unwrap();
    }
    fn paths(lib: &Library) -> Vec<String> {
        lib.list().unwrap().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn split_names_are_recognised() {
        assert_eq!(
            split_parts("m-Q4_K_M-00001-of-00003.gguf"),
            Some(("m-Q4_K_M", 3))
        );
        assert_eq!(split_parts("m-00002-of-00002.gguf"), Some(("m", 2)));
        assert_eq!(split_parts("m-1-of-3.gguf"), None);
        assert_eq!(split_parts("m.gguf"), None);
        assert_eq!(split_parts("m-00001-of-00003.bin"), None);
    }

    #[test]
    fn files_inside_the_models_folder_are_deleted_with_their_rows() {
        let d = tmp("inside");
        let models = d.0.join("models");
        let lib = Library::open(&d.0.join("library.sqlite3")).unwrap();
        let single = models.join("a.gguf");
        write(&single, 1000);
        let parts: Vec<PathBuf> = (1..=3)
            .map(|i| models.join(format!("big-{i:05}-of-00003.gguf")))
            .collect();
        for p in &parts {
            write(p, 100);
        }
        let other = models.join("big-00001-of-00002.gguf");
        write(&other, 5);
        let folder = models.join("hf-model");
        write(&folder.join("config.json"), 10);
        write(&folder.join("model.safetensors"), 90);
        for p in [&single, &parts[0], &folder] {
            record(&lib, p);
        }
        assert_eq!(disk_usage(&single), 1000);
        assert_eq!(model_disk_usage(&parts[0]), 300);
        assert_eq!(model_disk_usage(&folder), 100);
        let listed = lib.list().unwrap();
        let e = listed
            .iter()
            .find(|e| e.path == parts[0].display().to_string())
            .unwrap();
        assert_eq!(e.disk_bytes, 300);

        let roots = [models.clone()];
        let plan = deletion_plan(&parts[1], &roots).unwrap();
        assert_eq!(
            (plan.targets.len(), plan.bytes, plan.outside),
            (3, 300, false)
        );
        assert_eq!(
            lib.delete_model_files(&parts[0], &roots, false).unwrap(),
            300
        );
        assert!(parts.iter().all(|p| !p.exists()));
        assert!(other.exists(), "another split set stays");
        assert_eq!(lib.delete_model_files(&folder, &roots, false).unwrap(), 100);
        assert!(!folder.exists());
        assert_eq!(paths(&lib), [single.display().to_string()]);
        assert_eq!(
            lib.delete_model_files(&single, &roots, false).unwrap(),
            1000
        );
        assert!(paths(&lib).is_empty());
        assert!(models.is_dir(), "the models folder itself stays");
        // Gone already: refused, naming it.
        let e = lib
            .delete_model_files(&single, &roots, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.gguf") && e.contains("no such"), "{e}");
    }

    #[test]
    fn a_model_in_the_hf_cache_takes_its_repository_folder() {
        let d = tmp("hf");
        let cache = d.0.join("hub");
        let repo = cache.join("models--org--name");
        let commit = "a".repeat(40);
        let blob = repo.join("blobs").join("b1");
        let blob2 = repo.join("blobs").join("b2");
        write(&blob, 500);
        write(&blob2, 50);
        let snap = repo.join("snapshots").join(&commit);
        std::fs::create_dir_all(&snap).unwrap();
        let file = snap.join("m-Q4_0.gguf");
        let file2 = snap.join("m-Q8_0.gguf");
        std::os::unix::fs::symlink("../../blobs/b1", &file).unwrap();
        std::os::unix::fs::symlink("../../blobs/b2", &file2).unwrap();
        std::fs::create_dir_all(cache.join(".locks/models--org--name")).unwrap();
        let keep = cache.join("models--org--other/blobs/x");
        write(&keep, 3);
        let lib = Library::open(&d.0.join("library.sqlite3")).unwrap();
        record(&lib, &file);
        record(&lib, &file2);
        // Blobs counted once, links not at all.
        assert_eq!(disk_usage(&file), 500);
        assert_eq!(model_disk_usage(&file), 550);
        let roots = [d.0.join("models"), cache.clone()];
        let plan = deletion_plan(&file, &roots).unwrap();
        assert_eq!(plan.targets, [repo.display().to_string()]);
        assert!(!plan.outside);
        assert_eq!(lib.delete_model_files(&file, &roots, false).unwrap(), 550);
        assert!(!repo.exists() && !cache.join(".locks/models--org--name").exists());
        assert!(keep.exists());
        assert!(
            paths(&lib).is_empty(),
            "both files of the repository are forgotten"
        );
    }

    #[test]
    fn outside_the_allowed_folders_only_with_confirmation() {
        let d = tmp("outside");
        let models = d.0.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let mine = d.0.join("my-files").join("precious.gguf");
        write(&mine, 42);
        let lib = Library::open(&d.0.join("library.sqlite3")).unwrap();
        record(&lib, &mine);
        let roots = [models.clone()];
        let e = lib
            .delete_model_files(&mine, &roots, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("precious.gguf") && e.contains("confirmation"),
            "{e}"
        );
        assert!(mine.exists());
        // A link inside the models folder that leads outside is outside too, and a
        // path with `..` that climbs out of it.
        let link = models.join("link.gguf");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        assert!(deletion_plan(&link, &roots).unwrap().outside);
        assert!(lib.delete_model_files(&link, &roots, false).is_err());
        let dotdot = models.join("../my-files/precious.gguf");
        assert!(deletion_plan(&dotdot, &roots).unwrap().outside);
        assert!(mine.exists());
        let linked_dir = models.join("elsewhere");
        std::os::unix::fs::symlink(d.0.join("my-files"), &linked_dir).unwrap();
        assert!(
            deletion_plan(&linked_dir.join("precious.gguf"), &roots)
                .unwrap()
                .outside
        );
        // Confirmed: deleted (through the link: the real file, and the link).
        record(&lib, &link);
        assert_eq!(lib.delete_model_files(&link, &roots, true).unwrap(), 42);
        assert!(!mine.exists() && std::fs::symlink_metadata(&link).is_err());
        assert!(paths(&lib).is_empty());
    }

    #[test]
    fn what_is_not_a_model_or_holds_the_roots_is_never_deleted() {
        let d = tmp("never");
        let models = d.0.join("models");
        write(&models.join("notes.txt"), 3);
        write(&models.join("config.json"), 3);
        let roots = [models.clone()];
        let lib = Library::open(&d.0.join("library.sqlite3")).unwrap();
        for (p, why) in [
            (PathBuf::from("rel.gguf"), "absolute"),
            (models.join("notes.txt"), "not a model"),
            (models.clone(), "holds the app's folders"),
            (d.0.clone(), "not a model"),
        ] {
            let e = lib
                .delete_model_files(&p, &roots, true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{}: {e}", p.display());
        }
        // A folder that holds an allowed root, even confirmed.
        write(&d.0.join("config.json"), 2);
        let e = lib
            .delete_model_files(&d.0, &roots, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds the app's folders"), "{e}");
        assert!(models.join("notes.txt").exists());
    }
}
