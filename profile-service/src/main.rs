//! webchat-profile: placeholder until the profile service lands (issue 5).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("webchat-profile is not built yet")
}
