fn main() -> anyhow::Result<()> {
    anyhow::bail!("xtask: not built yet")
}
