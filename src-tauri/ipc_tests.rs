//! The commands through Tauri's IPC on its mock runtime, with the app's real
//! configuration: argument names as the front end sends them, the capability file's
//! permissions (a command missing from it is refused), results and errors as JSON,
//! and job events through channels.

use crate::state::AppState;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tauri::ipc::{CallbackFn, InvokeBody, InvokeResponseBody};
use tauri::test::{mock_builder, MockRuntime, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::WebviewWindow;

/// Channel messages by channel id, as the front end's `Channel` would get them.
#[derive(Default)]
struct Inbox {
    messages: Mutex<HashMap<u32, Vec<Value>>>,
    arrived: Condvar,
}

impl Inbox {
    /// Messages of channel `id` until one satisfies `last` (or a timeout fails the test).
    fn until(&self, id: u32, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut m = self.messages.lock().unwrap();
        loop {
            if let Some(v) = m.get(&id) {
                if v.iter().any(&last) {
                    return v.clone();
                }
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("channel message within 300 s");
            m = self.arrived.wait_timeout(m, left).unwrap().0;
        }
    }
}

/// The app on the mock runtime with its real capability file, its data in one
/// folder; every module's IPC tests use it.
pub(crate) struct Ipc {
    window: WebviewWindow<MockRuntime>,
    inbox: Arc<Inbox>,
    next_channel: u32,
    /// The app's data folder.
    pub dir: PathBuf,
    /// Whether dropping removes `dir` ([`Ipc::temp`]).
    owned: bool,
}

impl Ipc {
    /// The app with its data in a fresh temporary folder named after `name`, removed
    /// when dropped.
    pub(crate) fn temp(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("unicorn-ipc-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let mut ipc = Self::new(std::fs::canonicalize(&dir).unwrap());
        ipc.owned = true;
        ipc
    }

    fn new(data: PathBuf) -> Self {
        let inbox = Arc::new(Inbox::default());
        let sink = inbox.clone();
        let builder = mock_builder().channel_interceptor(move |_, callback, _, body| {
            let value = match body {
                InvokeResponseBody::Json(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                InvokeResponseBody::Raw(_) => Value::Null,
            };
            let mut m = sink.messages.lock().unwrap();
            m.entry(callback.0).or_default().push(value);
            sink.arrived.notify_all();
            true
        });
        let app = crate::app(builder, AppState::at(data.clone()))
            .build(tauri::generate_context!())
            .expect("the app builds on the mock runtime");
        let window = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("the main window");
        // The app must outlive the window's requests.
        std::mem::forget(app);
        Self {
            window,
            inbox,
            next_channel: 1000,
            dir: data,
            owned: false,
        }
    }

    /// The app's state, as the commands see it.
    pub(crate) fn state(&self) -> tauri::State<'_, AppState> {
        use tauri::Manager;
        self.window.state::<AppState>()
    }

    /// The library database the app uses.
    pub(crate) fn library(&self) -> unicorn_library::Library {
        unicorn_library::Library::open(&self.dir.join("library.sqlite3")).unwrap()
    }

    /// Calls `cmd` as the front end would; the result or the error as JSON.
    pub(crate) fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
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

    /// A channel argument, as `new Channel()` passes one.
    fn channel(&mut self) -> (u32, Value) {
        self.next_channel += 1;
        let id = self.next_channel;
        (id, json!(format!("__CHANNEL__:{id}")))
    }
}

impl Drop for Ipc {
    fn drop(&mut self) {
        if self.owned {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

fn demo() -> String {
    crate::library::demo_model_file().expect("demo model missing: run scripts/fetch-test-models")
}

/// The chat reply on channel `id`: its text and its final event.
fn reply(ipc: &Ipc, id: u32) -> (String, Value) {
    let events = ipc.inbox.until(id, |e| e["event"] != "token");
    let text = events
        .iter()
        .filter(|e| e["event"] == "token")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    (text, events.last().unwrap().clone())
}

/// Every command build.rs declares is registered and granted by the capability
/// file: none is refused by the ACL or unknown to the handler.
#[test]
fn every_declared_command_is_granted_and_registered() {
    let data = std::env::temp_dir().join(format!("unicorn-ipc-acl-{}", std::process::id()));
    let ipc = Ipc::new(data.clone());
    let build = include_str!("build.rs");
    let list = &build[build.find(".commands(&[").unwrap()..];
    let list = &list[..list.find("])").unwrap()];
    let names: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        // Arguments are left out: commands that need them refuse, and that is enough.
        if let Err(e) = ipc.invoke(name, json!({})) {
            let e = e.to_string();
            assert!(
                !e.contains("not allowed") && !e.contains("not found"),
                "{name}: {e}"
            );
        }
    }
    assert!(ipc
        .invoke("plugin:shell|execute", json!({}))
        .is_err_and(|e| e.to_string().contains("not")));
    std::fs::remove_dir_all(&data).ok();
}

/// The chat view's calls: import, load, a streamed reply stored in the history, the
/// same turn to a side model (not stored), unload; and errors as `{kind, message}`.
#[test]
fn chat_and_side_by_side_through_the_ipc() {
    let data = std::env::temp_dir().join(format!("unicorn-ipc-chat-{}", std::process::id()));
    std::fs::remove_dir_all(&data).ok();
    let mut ipc = Ipc::new(data.clone());

    let e = ipc
        .invoke("library_import", json!({ "path": "model.gguf" }))
        .unwrap_err();
    assert_eq!(e["kind"], "invalid");
    assert!(e["message"].as_str().unwrap().contains("absolute"), "{e}");
    let entry = ipc
        .invoke("library_import", json!({ "path": demo() }))
        .unwrap();
    assert_eq!(entry["architecture"], "llama");
    let listed = ipc.invoke("library_list", json!({})).unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["path"] == demo().as_str()));

    let (_, ch) = ipc.channel();
    let e = ipc
        .invoke(
            "chat_load",
            json!({ "path": demo(), "device": "tpu", "onProgress": ch }),
        )
        .unwrap_err();
    assert!(
        e["message"].as_str().unwrap().contains("give auto, cpu"),
        "{e}"
    );
    let (progress, ch) = ipc.channel();
    let loaded = ipc
        .invoke(
            "chat_load",
            json!({ "path": demo(), "device": "cpu", "onProgress": ch }),
        )
        .unwrap();
    assert_eq!(loaded["device"], "cpu");
    let events = ipc.inbox.until(progress, |e| {
        e["progress"]["done"] == e["progress"]["total"]
    });
    assert_eq!(
        events.last().unwrap()["progress"]["done"],
        loaded["weights_bytes"]
    );
    assert_eq!(loaded["has_chat_template"], true);
    let (_, ch) = ipc.channel();
    ipc.invoke(
        "chat_load",
        json!({ "path": demo(), "slot": "side", "onProgress": ch }),
    )
    .unwrap();

    let settings = json!({ "temperature": 0.0, "max_tokens": 24 });
    let turn = |ipc: &mut Ipc, slot: &str| {
        let (id, ch) = ipc.channel();
        ipc.invoke(
            "chat_send",
            json!({ "turn": { "kind": "new", "text": "What is the capital of France?", "system": null },
                    "settings": settings, "slot": slot, "onEvent": ch }),
        )
        .unwrap();
        reply(ipc, id)
    };
    let (main_text, done) = turn(&mut ipc, "main");
    assert!(main_text.contains("Paris"), "{main_text}");
    assert_eq!(done["event"], "done");
    assert!(done["stats"]["decode_tok_s"].as_f64().unwrap() > 0.0);
    let (side_text, done) = turn(&mut ipc, "side");
    assert_eq!(
        side_text, main_text,
        "the same model, greedy, gives the same reply"
    );
    assert_eq!(done["event"], "done");

    let chats = ipc.invoke("chat_list", json!({})).unwrap();
    assert_eq!(chats.as_array().unwrap().len(), 1, "{chats}");
    assert_eq!(chats[0]["messages"], 2, "the side reply is not stored");
    // The reply's context: the model's length clamped to memory, nothing dropped.
    assert_eq!(done["context"]["limit"], loaded["ctx_default"]);
    assert_eq!(done["context"]["dropped_tokens"], 0);
    assert_eq!(loaded["sampling_from_model"], false);
    assert!((loaded["sampling"]["repeat_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);

    // Regenerate (greedy: the same reply) and edit rewrite the stored chat.
    let send = |ipc: &mut Ipc, turn: Value, settings: &Value| {
        let (id, ch) = ipc.channel();
        ipc.invoke(
            "chat_send",
            json!({ "turn": turn, "settings": settings, "onEvent": ch }),
        )
        .unwrap();
        reply(ipc, id)
    };
    let (again, _) = send(&mut ipc, json!({ "kind": "regenerate" }), &settings);
    assert_eq!(again, main_text);
    // With a draft model (here the model itself): the same greedy reply, and the
    // reply's figures say what the draft did; a draft that is not there is refused.
    let drafted = json!({ "temperature": 0.0, "max_tokens": 24, "draft": demo() });
    let (with_draft, done) = send(&mut ipc, json!({ "kind": "regenerate" }), &drafted);
    assert_eq!(with_draft, main_text);
    assert_eq!(done["stats"]["draft"]["max_draft_tokens"], 8, "{done}");
    let missing = json!({ "temperature": 0.0, "draft": "/no/such/model.gguf" });
    let (_, ch) = ipc.channel();
    let e = ipc
        .invoke(
            "chat_send",
            json!({ "turn": { "kind": "regenerate" }, "settings": missing, "onEvent": ch }),
        )
        .unwrap_err();
    assert!(
        e["message"].as_str().unwrap().contains("no such file"),
        "{e}"
    );
    let chat_id = ipc.invoke("chat_list", json!({})).unwrap()[0]["id"].clone();
    let lib = unicorn_library::Library::open(&data.join("library.sqlite3")).unwrap();
    assert_eq!(
        lib.chat(chat_id.as_i64().unwrap())
            .unwrap()
            .unwrap()
            .1
            .len(),
        2
    );
    let (berlin, _) = send(
        &mut ipc,
        json!({ "kind": "edit", "index": 0, "text": "What is the capital of Germany?" }),
        &settings,
    );
    assert!(berlin.contains("Berlin"), "{berlin}");
    let (_, messages) = lib.chat(chat_id.as_i64().unwrap()).unwrap().unwrap();
    let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["What is the capital of Germany?", berlin.as_str()]);
    // A context too small for the next turn under `stop` is said, not a dead end.
    let tight = json!({ "temperature": 0.0, "max_tokens": 8, "ctx": 40, "overflow": "stop" });
    let (_, refused) = send(
        &mut ipc,
        json!({ "kind": "new", "text": "And what is the capital of Italy?" }),
        &tight,
    );
    assert_eq!(refused["event"], "error", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("context holds 40"),
        "{refused}"
    );
    let bad = json!({ "overflow": "sometimes" });
    let (_, ch) = ipc.channel();
    assert!(ipc
        .invoke(
            "chat_send",
            json!({ "turn": { "kind": "regenerate" }, "settings": bad, "onEvent": ch })
        )
        .is_err());

    ipc.invoke("chat_unload", json!({ "slot": "side" }))
        .unwrap();
    let (_, refused) = turn(&mut ipc, "side");
    assert_eq!(refused["event"], "error");
    assert!(refused["message"].as_str().unwrap().contains("no model"));

    // The output-head setting: a dense head gets its Q8_0 copy and the summary
    // says so; a quantized head (the demo's) is kept as stored; a bad value is
    // refused with the choices.
    let tiny = unicorn_test_support::tiny("llama").display().to_string();
    for (path, want) in [(tiny, "q8_0"), (demo(), "stored")] {
        let (_, ch) = ipc.channel();
        let loaded = ipc
            .invoke(
                "chat_load",
                json!({ "path": path, "slot": "side", "headType": "q8_0", "onProgress": ch }),
            )
            .unwrap();
        assert_eq!(loaded["head_type"], want, "{path}");
    }
    let (_, ch) = ipc.channel();
    let e = ipc
        .invoke(
            "chat_load",
            json!({ "path": demo(), "slot": "side", "headType": "q4", "onProgress": ch }),
        )
        .unwrap_err();
    assert!(
        e["message"].as_str().unwrap().contains("stored, q8_0"),
        "{e}"
    );
    ipc.invoke("chat_unload", json!({ "slot": "side" }))
        .unwrap();

    let e = ipc
        .invoke(
            "chat_send",
            json!({ "turn": { "kind": "new", "text": " " }, "settings": {}, "onEvent": "__CHANNEL__:1" }),
        )
        .unwrap_err();
    assert_eq!(e["message"], "the message is empty");

    let stats = ipc.invoke("system_stats", json!({})).unwrap();
    assert!(stats["gpus"].is_array() && stats["total_memory"].as_u64().unwrap() > 0);
    assert_eq!(stats["engine"], "CPU");
    assert_eq!(stats["engine_note"], serde_json::Value::Null);

    let p = ipc
        .invoke(
            "quantize_predict",
            json!({ "source": demo(), "to": "Q8_0" }),
        )
        .unwrap();
    assert!(p["memory_bytes"].as_u64().unwrap() > p["weights_bytes"].as_u64().unwrap());
    std::fs::remove_dir_all(&data).ok();
}

/// The Server panel's calls: start the API server on the demo model (port 0, a key),
/// a real HTTP request to it (refused without the key, answered with it) that the
/// status then lists with its measured figures, a second start refused, stop.
#[test]
fn api_server_through_the_ipc() {
    use std::io::{Read, Write};
    let data = std::env::temp_dir().join(format!("unicorn-ipc-server-{}", std::process::id()));
    let ipc = Ipc::new(data.clone());
    let off = ipc.invoke("server_status", json!({})).unwrap();
    assert_eq!(off["running"], false);
    let bad = ipc
        .invoke(
            "server_start",
            json!({"path": demo(), "port": 0, "apiKey": "k", "parallel": 0}),
        )
        .unwrap_err();
    assert_eq!(bad["kind"], "invalid", "{bad}");
    let on = ipc
        .invoke(
            "server_start",
            json!({"path": demo(), "port": 0, "apiKey": "k", "parallel": 2}),
        )
        .unwrap();
    assert_eq!(on["running"], true, "{on}");
    let url = on["base_url"].as_str().unwrap().to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let model = on["model"].as_str().unwrap().to_string();
    let post = |key: &str| -> String {
        let body = json!({"model": model, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        .to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(post("wrong").starts_with("HTTP/1.1 401"));
    let ok = post("k");
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains("Paris"),
        "{ok}"
    );
    let st = ipc.invoke("server_status", json!({})).unwrap();
    let reqs = st["requests"].as_array().unwrap();
    let done = reqs
        .iter()
        .find(|r| r["state"] == "done")
        .expect("the request is listed");
    assert!(
        done["tokens"].as_u64().unwrap() > 0 && done["ttft_ms"].as_f64().unwrap() > 0.0,
        "{st}"
    );
    let again = ipc
        .invoke(
            "server_start",
            json!({"path": demo(), "port": 0, "apiKey": null, "parallel": 1}),
        )
        .unwrap_err();
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{again}"
    );
    let stopped = ipc.invoke("server_stop", json!({})).unwrap();
    assert_eq!(stopped["running"], false);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening after stop"
    );
    std::fs::remove_dir_all(&data).ok();
}

/// Images in the chat, through the IPC with the tiny Gemma 3 vision model: the
/// loaded model says it takes them, a dropped file is read, a message with its image
/// is answered with the image's tokens counted, stored with it, shown on reopening
/// and given to the model again; hostile images (not one, too many, for a model without vision) are
/// refused in one line before anything is stored; edit and delete let them go.
#[test]
fn chat_images_through_the_ipc() {
    use base64::Engine as _;
    let mut ipc = Ipc::temp("images");
    let model = unicorn_test_support::tiny_vision_chat(&ipc.dir);
    let png = unicorn_test_support::tiny("gemma3_vision").join("image.png");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let (_, ch) = ipc.channel();
    let loaded = ipc
        .invoke(
            "chat_load",
            json!({ "path": model.display().to_string(), "device": "cpu", "onProgress": ch }),
        )
        .unwrap();
    assert_eq!(loaded["images"]["tokens_per_image"], 16, "{loaded}");
    assert_eq!(loaded["images"]["max_per_message"], 8);
    assert_eq!(loaded["images"]["max_bytes"], 20 << 20);

    // A dropped file, read by the shell; a file that is not an image is refused.
    let read = ipc
        .invoke(
            "chat_image_read",
            json!({ "path": png.display().to_string() }),
        )
        .unwrap();
    assert_eq!(read["name"], "image.png");
    let data = read["data"].as_str().unwrap().to_string();
    assert_eq!(data, b64(&std::fs::read(&png).unwrap()));
    let notes = ipc.dir.join("notes.png");
    std::fs::write(&notes, "plain text").unwrap();
    let e = ipc
        .invoke(
            "chat_image_read",
            json!({ "path": notes.display().to_string() }),
        )
        .unwrap_err();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .ends_with("notes.png: not a PNG, JPEG or WebP image"),
        "{e}"
    );

    let thumb = format!("data:image/png;base64,{data}");
    let image = |name: &str, data: &str| json!({ "name": name, "data": data, "thumb": thumb });
    let settings = json!({ "temperature": 0.0, "max_tokens": 6 });
    let send = |ipc: &mut Ipc, turn: Value, slot: &str| {
        let (id, ch) = ipc.channel();
        ipc.invoke(
            "chat_send",
            json!({ "turn": turn, "settings": settings, "slot": slot, "onEvent": ch }),
        )
        .map(|chat| (chat, reply(ipc, id)))
    };
    let new = |text: &str, images: Vec<Value>| json!({ "kind": "new", "text": text, "system": null, "images": images });

    let (chat, (_, done)) = send(
        &mut ipc,
        new("What is in the picture?", vec![image("image.png", &data)]),
        "main",
    )
    .unwrap();
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["stats"]["image_tokens"], 16, "{done}");
    let chat = chat.as_i64().unwrap();

    // Refused before anything is stored, each in one line naming the image.
    let not_image = b64(b"GIF89a not what the engine decodes");
    let nine: Vec<Value> = (0..9).map(|i| image(&format!("{i}.png"), &data)).collect();
    let mut truncated = std::fs::read(&png).unwrap();
    truncated.truncate(40);
    for (turn, why) in [
        (
            new("And this?", vec![image("anim.gif", &not_image)]),
            "anim.gif: not a PNG, JPEG or WebP image",
        ),
        (new("And these?", nine), "9 images: at most 8"),
        (
            new("And this?", vec![image("cut.png", &b64(&truncated))]),
            "cut.png",
        ),
        (new("  ", vec![]), "the message is empty"),
    ] {
        let e = send(&mut ipc, turn, "main").unwrap_err();
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(why) && !m.contains('\n'), "{why}: {e}");
    }
    let stored = ipc.library().chat(chat).unwrap().unwrap().1;
    assert_eq!(stored.len(), 2, "nothing of the refused turns is stored");

    // The next turn, text alone: the image is still in the conversation, and in the
    // cache (only the new turn is computed).
    let (_, (_, done)) = send(&mut ipc, new("Describe it again.", vec![]), "main").unwrap();
    assert_eq!(done["stats"]["image_tokens"], 16, "{done}");
    assert!(
        done["stats"]["prefill_tokens"].as_u64() < done["stats"]["prompt_tokens"].as_u64(),
        "{done}"
    );
    // A message of images alone is a message.
    let (_, (_, done)) = send(&mut ipc, new("", vec![image("again.png", &data)]), "main").unwrap();
    assert_eq!(done["stats"]["image_tokens"], 32, "{done}");

    // A model without vision refuses images, saying so (the side slot: not stored).
    let (_, ch) = ipc.channel();
    let text_only = ipc
        .invoke(
            "chat_load",
            json!({ "path": demo(), "slot": "side", "onProgress": ch }),
        )
        .unwrap();
    assert_eq!(text_only["images"], Value::Null);
    let e = send(
        &mut ipc,
        new("Look!", vec![image("image.png", &data)]),
        "side",
    )
    .unwrap_err();
    assert!(
        e["message"].as_str().unwrap().contains("takes no images"),
        "{e}"
    );
    ipc.invoke("chat_unload", json!({ "slot": "side" }))
        .unwrap();

    // Reopened: each message's images come back with it.
    let opened = ipc.invoke("chat_open", json!({ "id": chat })).unwrap();
    let images = opened["images"].as_array().unwrap();
    assert_eq!(images.len(), 6, "{opened}");
    assert_eq!(images[0][0]["name"], "image.png");
    assert_eq!(images[0][0]["thumb"], thumb.as_str());
    assert_eq!(images[4][0]["name"], "again.png");
    for i in [1, 2, 3, 5] {
        assert_eq!(images[i], json!([]), "message {i}");
    }
    let list = ipc.invoke("chat_list", json!({})).unwrap();
    assert_eq!(list[0]["title"], "What is in the picture?");
    // ... and the model has them again: the next turn's prompt holds both images.
    assert_eq!(opened["notice"], Value::Null, "{opened}");
    let (_, (_, done)) = send(&mut ipc, new("Which came first?", vec![]), "main").unwrap();
    assert_eq!(done["stats"]["image_tokens"], 32, "{done}");

    // Editing a message sends its text alone: its images go, from the store too.
    let (_, (_, done)) = send(
        &mut ipc,
        json!({ "kind": "edit", "index": 4, "text": "No picture now." }),
        "main",
    )
    .unwrap();
    assert_eq!(done["event"], "done", "{done}");
    let opened = ipc.invoke("chat_open", json!({ "id": chat })).unwrap();
    assert_eq!(opened["images"][4], json!([]));
    assert_eq!(opened["images"][0][0]["name"], "image.png");

    // Deleting the chat deletes its images.
    let folder = ipc.dir.join("chat-images").join(chat.to_string());
    assert!(folder.join("0").is_dir());
    assert_eq!(
        ipc.invoke("chat_delete", json!({ "id": chat })).unwrap(),
        true
    );
    assert!(!folder.exists());
}
