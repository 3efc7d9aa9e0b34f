fn main() -> anyhow::Result<()> {
    anyhow::bail!("helloworld: not built yet")
}
