//! Reading `/metrics`: one sample by name and labels, a sum over series,
//! and fetching the text.

/// The value of one sample of `/metrics`: the line that starts with `name{`
/// and holds every label in `labels` (or is exactly `name` when there are
/// none).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(text, name, labels).next()
}

/// The sum of every sample of `name` that holds every label in `labels`.
pub fn sum_of(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name, labels).sum()
}

fn samples<'a>(text: &'a str, name: &'a str, labels: &'a [&'a str]) -> impl Iterator<Item = f64> + 'a {
    let open = format!("{name}{{");
    text.lines().filter(|l| !l.starts_with('#')).filter_map(move |l| {
        let (series, value) = l.rsplit_once(' ')?;
        let matches = if labels.is_empty() {
            series == name
        } else {
            series.starts_with(&open) && labels.iter().all(|lab| series.contains(lab))
        };
        if matches {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// The text of `GET {base_url}/metrics`.
pub async fn scrape(base_url: &str) -> Result<String, String> {
    reqwest::get(format!("{base_url}/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_samples_by_name_and_labels() {
        let text = "# HELP x\nup 1\nq{a=\"1\",b=\"2\"} 3\nq{a=\"1\",b=\"3\"} 4\nqq{a=\"1\"} 9\n";
        assert_eq!(metric(text, "up", &[]), Some(1.0));
        assert_eq!(metric(text, "q", &["b=\"3\""]), Some(4.0));
        assert_eq!(sum_of(text, "q", &["a=\"1\""]), 7.0);
        assert_eq!(metric(text, "nope", &[]), None);
    }
}
