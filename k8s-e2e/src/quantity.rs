//! Resource quantities for `resourceFieldRef` (env and downward API), as the kubelet renders
//! them: the quantity divided by the divisor, rounded up.

/// Parses a Kubernetes quantity (`500m`, `2`, `1Gi`, `128M`, `1e3`) into a number.
pub fn parse(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    for (suffix, factor) in [("P", 1e15), ("E", 1e18)] {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok()
}

/// `value / divisor`, rounded up, as the kubelet's `ExtractContainerResourceValue` does.
pub fn render(value: f64, divisor: Option<&str>) -> String {
    let divisor = divisor.and_then(parse).filter(|d| *d > 0.0).unwrap_or(1.0);
    format!("{}", (value / divisor).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_render_like_the_kubelet() {
        assert_eq!(render(parse("500m").expect("q"), None), "1");
        assert_eq!(render(parse("1500m").expect("q"), Some("1m")), "1500");
        assert_eq!(render(parse("1Gi").expect("q"), Some("1Mi")), "1024");
        assert_eq!(render(parse("2").expect("q"), None), "2");
    }
}
