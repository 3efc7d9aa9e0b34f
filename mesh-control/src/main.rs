fn main() -> anyhow::Result<()> {
    anyhow::bail!("mesh-control: not built yet")
}
