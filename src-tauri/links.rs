//! Links in model replies. A reply is text from a model, so a link in it may point
//! anywhere: the app's window never navigates away from the app (a navigation guard
//! refuses every URL outside it), and a link the user clicks opens in the system
//! browser through [`open_external`], which takes only http(s) URLs.

use crate::error::{CommandError, CommandResult};
use tauri::{plugin::TauriPlugin, Runtime, Url};

/// The guard: the window may load only the app's own pages.
pub fn navigation_guard<R: Runtime>() -> TauriPlugin<R> {
    tauri::plugin::Builder::new("navigation-guard")
        .on_navigation(|_webview, url| is_app_page(url))
        .build()
}

/// The app's own origin: `tauri://localhost` (Linux, macOS) or
/// `http(s)://tauri.localhost` (Windows), where the embedded front end is served.
pub(crate) fn is_app_page(url: &Url) -> bool {
    match url.scheme() {
        "tauri" => url.host_str() == Some("localhost"),
        "http" | "https" => url.host_str() == Some("tauri.localhost"),
        _ => false,
    }
}

/// Longest URL handed to the browser: browsers themselves stop around 2 MB, but a
/// link anyone means to click is far shorter, and the command line has limits.
const MAX_URL: usize = 8192;

/// Checks a URL from the webview before it reaches the browser: http or https only
/// (no `file:`, `javascript:`, custom schemes that launch other programs), with a
/// host, and no user name or password (a classic way to disguise the real host).
pub(crate) fn external_url(url: &str) -> CommandResult<Url> {
    let refuse = |why: &str| {
        let shown: String = url.chars().take(200).collect();
        Err(CommandError::Invalid(format!("link {shown:?}: {why}")))
    };
    if url.len() > MAX_URL {
        return refuse(&format!("longer than {MAX_URL} bytes"));
    }
    let Ok(parsed) = Url::parse(url) else {
        return refuse("not a valid URL");
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return refuse("only http and https links open in the browser");
    }
    if parsed.host_str().is_none_or(str::is_empty) || is_app_page(&parsed) {
        return refuse("no web host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("links with a user name or password are not opened");
    }
    Ok(parsed)
}

/// Opens a link the user clicked in the system's browser. The URL goes to the
/// platform's opener as one argument (no shell), re-serialised by the URL parser,
/// so it is percent-encoded and cannot carry options or extra commands.
#[tauri::command]
pub fn open_external(url: String) -> CommandResult<()> {
    let url = external_url(&url)?;
    let mut cmd = opener();
    cmd.arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().map_err(|e| {
        CommandError::Invalid(format!(
            "could not start {:?} to open the link: {e}",
            cmd.get_program()
        ))
    })?;
    // Reaped on a thread so the opener never lingers as a zombie.
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(target_os = "macos")]
fn opener() -> std::process::Command {
    std::process::Command::new("open")
}

#[cfg(target_os = "windows")]
fn opener() -> std::process::Command {
    // The URL handler of the shell, without `cmd /c start` (which would parse `&`).
    let mut c = std::process::Command::new("rundll32");
    c.arg("url.dll,FileProtocolHandler");
    c
}

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn opener() -> std::process::Command {
    std::process::Command::new("xdg-open")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_stays_on_the_app() {
        for ok in [
            "tauri://localhost/",
            "tauri://localhost/index.html",
            "http://tauri.localhost/",
        ] {
            assert!(is_app_page(&Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "https://example.com/",
            "http://tauri.localhost.evil.com/",
            "file:///etc/passwd",
            "tauri://evil/",
            "data:text/html,hi",
            "javascript:alert(1)",
        ] {
            assert!(!is_app_page(&Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn only_plain_web_links_reach_the_browser() {
        let ok = external_url("https://example.com/a b?q=1&r=2").unwrap();
        assert_eq!(ok.as_str(), "https://example.com/a%20b?q=1&r=2");
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "vscode://open?x",
            "ssh://host",
            "https://user:pw@example.com/",
            "https://example.com@evil.com/",
            "http://tauri.localhost/",
            "-e",
            "not a url",
        ] {
            let e = external_url(bad).unwrap_err().to_string();
            assert!(e.starts_with("link "), "{bad}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(external_url(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }
}
