//! Settings both binaries read the same way. Each binary owns its own flags (`Settings`);
//! what one environment variable means to both is defined once here.

use clap::ValueEnum;

/// How clients authenticate (`WEBCHAT_AUTH`, read by both binaries so that one environment
/// configures both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// A signed token (from signup/login) is required: to connect a socket, and to change a
    /// profile (the profile service's legacy routes answer 404).
    Token,
    /// Trusted networks only: the `join` event with a bare uid logs that uid in, and the
    /// profile service needs no token and serves the original web client's `/add`,
    /// `/search/{uid}` and `/getall` routes.
    Open,
}
