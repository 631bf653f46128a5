//! The IPC test harness of the library and stored-chat commands: the app on Tauri's
//! mock runtime with its real capability file, in a temporary data folder.

use crate::state::AppState;
use serde_json::Value;
use std::path::PathBuf;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{mock_builder, MockRuntime, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::WebviewWindow;

pub(crate) struct Ipc {
    window: WebviewWindow<MockRuntime>,
    /// The app's data folder (removed when dropped).
    pub dir: PathBuf,
}

impl Ipc {
    /// The app with its data in a fresh temporary folder named after `name`.
    pub fn temp(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("unicorn-ipc-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let app = crate::app(mock_builder(), AppState::at(dir.clone()))
            .build(tauri::generate_context!())
            .expect("the app builds on the mock runtime");
        let window = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("the main window");
        // The app must outlive the window's requests.
        std::mem::forget(app);
        Self { window, dir }
    }

    /// The app's state, as the commands see it.
    pub fn state(&self) -> tauri::State<'_, AppState> {
        use tauri::Manager;
        self.window.state::<AppState>()
    }

    /// The library database the app uses.
    pub fn library(&self) -> unicorn_library::Library {
        unicorn_library::Library::open(&self.dir.join("library.sqlite3")).unwrap()
    }

    /// Calls `cmd` as the front end would; the result or the error as JSON.
    pub fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        let request = InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        };
        tauri::test::get_ipc_response(&self.window, request)
            .map(|b| b.deserialize::<Value>().unwrap())
    }
}

impl Drop for Ipc {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
