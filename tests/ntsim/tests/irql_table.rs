//! Every kernel export ntsim implements has an entry in the one DDI → IRQL table, so
//! no export escapes the IRQL check.

#[test]
fn every_export_has_a_documented_irql() {
    let mut missing = Vec::new();
    let mut seen = 0;
    let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.windows(2) {
                if pair[0].trim() == "#[unsafe(no_mangle)]"
                    && let Some(rest) = pair[1].trim().strip_prefix("pub unsafe extern \"C\" fn ")
                {
                    let name = rest.split('(').next().unwrap();
                    seen += 1;
                    if ntsim::irql::max_irql(name).is_none() {
                        missing.push(name.to_owned());
                    }
                }
            }
        }
    }
    assert!(seen > 50, "found only {seen} exports");
    assert!(missing.is_empty(), "exports without an IRQL rule: {missing:?}");
    assert!(ntsim::irql::max_irql("NotAKernelRoutine").is_none());
}
