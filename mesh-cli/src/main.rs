fn main() -> anyhow::Result<()> {
    anyhow::bail!("meshctl: not built yet")
}
