//! How a canary compares one connection's output: as byte streams, with the noise
//! the serving code makes against itself masked.

/// Where a candidate's output first differs from the serving generation's, or
/// `None` if they agree.
///
/// `noise` is what a second run of the serving code wrote on the same input: where
/// it differs from `serving` is noise (a timestamp, a random id), and the whole
/// token around it (the run of letters and digits it falls in) is not compared, so
/// that a digit the two runs happen to share does not count. The mask is by
/// position, so noise of varying length (a number printed without padding) shifts
/// what follows: when the two serving runs differ in length, everything from the
/// shorter one's end is masked, and so is a difference in length.
pub fn first_difference(serving: &[u8], candidate: &[u8], noise: Option<&[u8]>) -> Option<usize> {
    let noisy_from = match noise {
        Some(noise) if noise.len() != serving.len() => noise.len().min(serving.len()),
        _ => usize::MAX,
    };
    let mask = noise
        .map(|noise| noise_mask(serving, noise))
        .unwrap_or_default();
    let masked = |i: usize| i >= noisy_from || mask.get(i).copied().unwrap_or(false);
    let common = serving.len().min(candidate.len());
    if let Some(i) = (0..common).find(|&i| serving[i] != candidate[i] && !masked(i)) {
        return Some(i);
    }
    (serving.len() != candidate.len() && common < noisy_from).then_some(common)
}

/// Whether the serving code's two runs agree too little for a comparison to prove
/// anything: they differ in length (noise of varying length, or state the shadows
/// never saw, such as what other connections stored: `VALUE 1` against
/// `NOT_FOUND`), or on more than nine tenths of the output.
pub fn mostly_noise(serving: &[u8], noise: &[u8]) -> bool {
    if serving.len() != noise.len() {
        return true;
    }
    let masked = noise_mask(serving, noise).iter().filter(|&&m| m).count();
    masked * 10 > serving.len() * 9
}

/// The positions of `serving` that are noise: every token (a run of ASCII letters
/// and digits, or a single other byte) in which `noise` differs from it.
fn noise_mask(serving: &[u8], noise: &[u8]) -> Vec<bool> {
    let mut mask = vec![false; serving.len()];
    let word = |b: u8| b.is_ascii_alphanumeric();
    let common = serving.len().min(noise.len());
    let mut i = 0;
    while i < common {
        if serving[i] == noise[i] {
            i += 1;
            continue;
        }
        let (mut start, mut end) = (i, i + 1);
        if word(serving[i]) {
            while start > 0 && word(serving[start - 1]) {
                start -= 1;
            }
            while end < serving.len() && word(serving[end]) {
                end += 1;
            }
        }
        mask[start..end].fill(true);
        i = end;
    }
    mask
}

/// Up to `CONTEXT` bytes either side of `at`, escaped for one log line.
pub fn snippet(bytes: &[u8], at: usize) -> String {
    const CONTEXT: usize = 24;
    let start = at.saturating_sub(CONTEXT).min(bytes.len());
    let end = (at + CONTEXT).min(bytes.len());
    let mut text = String::new();
    if start > 0 {
        text.push('…');
    }
    text.push_str(&bytes[start..end].escape_ascii().to_string());
    if end < bytes.len() {
        text.push('…');
    }
    format!("\"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_streams_agree() {
        assert_eq!(first_difference(b"hello", b"hello", None), None);
    }

    #[test]
    fn the_first_differing_byte_is_found() {
        assert_eq!(first_difference(b"hello\n", b"help!\n", None), Some(3));
    }

    #[test]
    fn a_shorter_or_longer_candidate_differs_where_the_shorter_ends() {
        assert_eq!(first_difference(b"hello", b"hel", None), Some(3));
        assert_eq!(first_difference(b"hello", b"hello, world", None), Some(5));
    }

    #[test]
    fn noise_the_serving_code_makes_against_itself_is_masked() {
        let serving = b"time=1234 ok";
        let noise = b"time=1299 ok";
        let diff = |candidate: &[u8]| first_difference(serving, candidate, Some(noise));
        // The whole number is noise, not only the digits that differed.
        assert_eq!(diff(b"time=5678 ok"), None);
        assert_eq!(diff(b"tima=1234 ok"), Some(3));
        assert_eq!(diff(b"time=1234 no"), Some(10));
        assert_eq!(first_difference(serving, b"time=5678 ok", None), Some(5));
    }

    #[test]
    fn a_digit_the_two_serving_runs_share_is_noise_too() {
        // The runs agree on the third digit by chance; the candidate does not.
        let serving = b"t=123 ok";
        let noise = b"t=923 ok";
        assert_eq!(first_difference(serving, b"t=456 ok", Some(noise)), None);
        assert_eq!(first_difference(serving, b"t=456 no", Some(noise)), Some(6));
    }

    #[test]
    fn noise_of_varying_length_masks_what_follows() {
        let serving = b"id=12 ok";
        let noise = b"id=1234 ok";
        assert_eq!(first_difference(serving, b"id=123 ok", Some(noise)), None);
        assert_eq!(first_difference(serving, b"ix=12 ok", Some(noise)), Some(1));
    }

    #[test]
    fn output_that_is_mostly_noise_is_told() {
        assert!(!mostly_noise(b"VALUE 1\n", b"VALUE 1\n"));
        assert!(!mostly_noise(b"t=123 ok, all fine", b"t=456 ok, all fine"));
        assert!(mostly_noise(b"VALUE 1\n", b"NOT_FOUND\n"));
        assert!(mostly_noise(b"a longer answer", b"a"));
        // A timestamp and an echo: mostly noise, but not all of it.
        assert!(!mostly_noise(
            b"01795972647203898655 ping\n",
            b"01795972647203927308 ping\n"
        ));
        assert!(mostly_noise(
            b"01795972647203898655",
            b"01795972647203927308"
        ));
    }

    #[test]
    fn snippets_are_escaped_and_cut() {
        assert_eq!(snippet(b"a\r\nb", 1), "\"a\\r\\nb\"");
        let long = [b'x'; 100];
        assert_eq!(snippet(&long, 50).chars().filter(|&c| c == '…').count(), 2);
    }
}
