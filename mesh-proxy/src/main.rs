fn main() -> anyhow::Result<()> {
    anyhow::bail!("mesh-proxy: not built yet")
}
