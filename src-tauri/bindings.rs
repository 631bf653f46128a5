//! The TypeScript twins of every type the shell and the front end exchange
//! (`ui/src/bindings/`), all derived one way: `ts_rs::TS` on the Rust type, in the
//! app or (behind the `ts` feature) in the engine and library crates, exported here.
//! `bindings_are_current` fails when the committed files drift from the types.

#[cfg(test)]
mod tests {
    use crate::chat::types::{
        ChatEvent, ChatSettings, ContextEstimate, ImageFile, LoadEvent, LoadedSummary, OpenedChat,
        Slot, Turn,
    };
    use crate::hub::types::{HubListing, HubPlan, HubSearchResult, PullEvent};
    use crate::quantize::types::{CompareEvent, QuantizeEvent, QuantizePrediction};
    use crate::server::ServerStatus;
    use crate::system::SystemStats;
    use std::collections::BTreeMap;
    use std::path::Path;
    use ts_rs::TS;

    /// Every type the front end receives or sends, as ts-rs writes it now (with
    /// what they contain: engine, library and progress types alike).
    fn generate(dir: &Path) {
        ChatEvent::export_all_to(dir).unwrap();
        ChatSettings::export_all_to(dir).unwrap();
        Slot::export_all_to(dir).unwrap();
        Turn::export_all_to(dir).unwrap();
        ContextEstimate::export_all_to(dir).unwrap();
        LoadEvent::export_all_to(dir).unwrap();
        LoadedSummary::export_all_to(dir).unwrap();
        OpenedChat::export_all_to(dir).unwrap();
        ImageFile::export_all_to(dir).unwrap();
        PullEvent::export_all_to(dir).unwrap();
        HubListing::export_all_to(dir).unwrap();
        HubPlan::export_all_to(dir).unwrap();
        HubSearchResult::export_all_to(dir).unwrap();
        QuantizeEvent::export_all_to(dir).unwrap();
        QuantizePrediction::export_all_to(dir).unwrap();
        CompareEvent::export_all_to(dir).unwrap();
        SystemStats::export_all_to(dir).unwrap();
        ServerStatus::export_all_to(dir).unwrap();
        unicorn_library::chats::ChatRecord::export_all_to(dir).unwrap();
        unicorn_library::Entry::export_all_to(dir).unwrap();
        unicorn_library::files::DeletionPlan::export_all_to(dir).unwrap();
        unicorn_library::settings::Preset::export_all_to(dir).unwrap();
    }

    fn read_dir(dir: &Path) -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read_to_string(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The committed TypeScript types equal what the Rust types generate, so the
    /// front end cannot drift from the shell. `UNICORN_UPDATE_BINDINGS=1 cargo test
    /// -p unicorn-app bindings` rewrites them.
    #[test]
    fn bindings_are_current() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/src/bindings");
        let fresh = std::env::temp_dir().join(format!("unicorn-bindings-{}", std::process::id()));
        std::fs::remove_dir_all(&fresh).ok();
        generate(&fresh);
        let (want, have) = (read_dir(&fresh), read_dir(&committed));
        if std::env::var_os("UNICORN_UPDATE_BINDINGS").is_some() {
            std::fs::remove_dir_all(&committed).ok();
            std::fs::create_dir_all(&committed).unwrap();
            for (name, text) in &want {
                std::fs::write(committed.join(name), text).unwrap();
            }
        } else {
            assert_eq!(
                have.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "ui/src/bindings is stale: run UNICORN_UPDATE_BINDINGS=1 cargo test -p unicorn-app bindings"
            );
            for (name, text) in &want {
                assert_eq!(&have[name], text, "ui/src/bindings/{name} is stale");
            }
        }
        std::fs::remove_dir_all(&fresh).ok();
    }
}
