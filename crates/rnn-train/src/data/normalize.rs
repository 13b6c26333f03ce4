//! Text normalisation for translation pairs: word tokens with punctuation split off, and the
//! normalisation and filter of the PyTorch "NLP from scratch: translation with a sequence to
//! sequence network and attention" tutorial, which reproduce its data set from the Tatoeba
//! (manythings.org) `fra.txt` pairs.

/// Lower-cased words, punctuation (other than `'` and `-`) split off as separate tokens:
/// `"Va, vite !"` -> `["va", ",", "vite", "!"]`.
pub fn word_tokens(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len() + 8);
    for c in text.to_lowercase().chars() {
        if (c.is_ascii_punctuation() || is_unicode_punct(c)) && c != '\'' && c != '-' {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    spaced.split_whitespace().map(str::to_string).collect()
}

fn is_unicode_punct(c: char) -> bool {
    matches!(
        c,
        '«' | '»' | '¿' | '¡' | '…' | '“' | '”' | '„' | '‘' | '’' | '—' | '–' | '·'
    )
}

/// The base letter of a (lower-case) Latin letter with diacritics, as Unicode NFD followed by
/// dropping the combining marks would give; `None` for a combining mark itself.
fn strip_accent(c: char) -> Option<char> {
    Some(match c {
        '\u{300}'..='\u{36f}' => return None,
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' => 'h',
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' => 's',
        'ţ' | 'ť' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        other => other,
    })
}

/// The PyTorch tutorial's `normalizeString`
/// (<https://pytorch.org/tutorials/intermediate/seq2seq_translation_tutorial.html>): lower case, accents stripped (NFD without
/// combining marks), a space before `.`, `!` and `?`, then every run of characters other than
/// ASCII letters, `!` and `?` becomes one space; trimmed. `"Je suis prêt."` -> `"je suis pret"`,
/// `"I'm OK!"` -> `"i m ok !"`.
pub fn tutorial_normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.trim().to_lowercase().chars().filter_map(strip_accent) {
        let keep = c.is_ascii_alphabetic() || c == '!' || c == '?';
        if c == '!' || c == '?' {
            pending_space = true;
        }
        if keep {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    out
}

/// English prefixes of the tutorial's filter (on normalised text).
const TUTORIAL_PREFIXES: [&str; 12] = [
    "i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ", "we are",
    "we re ", "they are", "they re ",
];
/// Pairs keep fewer words than this on each side.
const TUTORIAL_MAX_WORDS: usize = 10;

/// The tutorial's `filterPair` on normalised text: fewer than 10 words on both sides and the
/// English side starting with one of the "i am / he is / ..." prefixes.
pub fn tutorial_keeps(english: &str, other: &str) -> bool {
    english.split(' ').count() < TUTORIAL_MAX_WORDS
        && other.split(' ').count() < TUTORIAL_MAX_WORDS
        && TUTORIAL_PREFIXES.iter().any(|p| english.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_normalisation_matches_pytorch() {
        // Expected strings from the tutorial's normalizeString (Python, unicodedata NFD).
        assert_eq!(tutorial_normalize("Je suis prêt."), "je suis pret");
        assert_eq!(tutorial_normalize("I'm OK!"), "i m ok !");
        assert_eq!(tutorial_normalize("  Ça va?? "), "ca va ? ?");
        assert_eq!(tutorial_normalize("Il a 20 ans."), "il a ans");
        assert_eq!(tutorial_normalize("cœur"), "c ur");
        assert!(tutorial_keeps("i m ok", "je vais bien"));
        assert!(tutorial_keeps("he isn t here", "il n est pas ici"));
        assert!(!tutorial_keeps("i mean it", "je le pense"));
        assert!(!tutorial_keeps("i am a b c d e f g h", "je suis"));
    }

    #[test]
    fn word_tokens_split_punctuation() {
        assert_eq!(
            word_tokens("Va, vite !  «Aujourd'hui»"),
            ["va", ",", "vite", "!", "«", "aujourd'hui", "»"]
        );
    }
}
