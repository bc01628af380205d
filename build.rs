//! Rebuilds the `webchat` crate when any file of the web client changes: the client is
//! embedded (src/http/webclient.rs), and rust-embed alone would not notice a file that was
//! added or removed.

fn main() {
    println!("cargo:rerun-if-changed=webclient");
}
