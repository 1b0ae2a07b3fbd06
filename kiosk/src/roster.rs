//! Roster CSV import: parse and validate a whole file, reporting every bad row by line, before anything is stored.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use kiosk_device::{CardToken, Spelling};

use crate::reception::{BROKER_CODE_PREFIX, Source};

/// How the screen addresses a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Title {
    Mr,
    Ms,
}

impl Title {
    pub fn as_str(self) -> &'static str {
        match self {
            Title::Mr => "mr",
            Title::Ms => "ms",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Title::Mr => "先生",
            Title::Ms => "女士",
        }
    }

    pub fn en(self) -> &'static str {
        match self {
            Title::Mr => "Mr.",
            Title::Ms => "Ms.",
        }
    }

    fn parse(text: &str) -> Option<Title> {
        match text.trim().to_lowercase().trim_end_matches('.') {
            "mr" | "先生" | "m" | "male" | "男" => Some(Title::Mr),
            "ms" | "女士" | "f" | "female" | "女" | "mrs" | "miss" => Some(Title::Ms),
            _ => None,
        }
    }

    /// Reads a value the schema's CHECK constraint already guarantees.
    pub(crate) fn from_db(text: &str) -> Title {
        if text == "ms" { Title::Ms } else { Title::Mr }
    }
}

/// Member tier (design §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Normal,
    Silver,
    Gold,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Normal => "normal",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
        }
    }

    fn parse(text: &str) -> Option<Tier> {
        match text.trim().to_lowercase().as_str() {
            "normal" | "普通" | "普通会员" => Some(Tier::Normal),
            "silver" | "银卡" | "银卡会员" => Some(Tier::Silver),
            "gold" | "金卡" | "金卡会员" => Some(Tier::Gold),
            _ => None,
        }
    }

    pub(crate) fn from_db(text: &str) -> Tier {
        match text {
            "gold" => Tier::Gold,
            "silver" => Tier::Silver,
            _ => Tier::Normal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub surname: String,
    pub title: Title,
    pub tier: Tier,
    pub consultant_id: Option<String>,
    /// Full name, for the hub's CRM only: a kiosk never stores it.
    pub name: Option<String>,
    /// Normalized phone number, for the hub only (one customer per number).
    pub phone: Option<String>,
    /// Picks the protection period; `None`: the visit period.
    pub source: Option<Source>,
    /// The last qualifying contact with the consultant; `None`: protection not tracked.
    pub last_follow_up: Option<Timestamp>,
    /// The broker's report (报备) of this customer, checked when the broker's code is scanned.
    pub registration: Option<Registration>,
}

/// A broker's report (报备) of a customer, given on the customer's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub broker_id: String,
    pub registered_at: Timestamp,
    /// `None`: `registered_at` + the broker-report protection period.
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardEntry {
    pub token: CardToken,
    pub customer_id: String,
    pub active: bool,
    /// Why a card is revoked, for staff; never shown on the public screen.
    pub note: Option<String>,
    /// Given as DEZ8, which prints only the low 24 bits of an EM4100 number: `token` is
    /// `em:00` + those bits, and the store matches taps by them (see `store::find_card`).
    pub low24_only: bool,
}

/// A validated roster, ready to store in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    pub consultants: BTreeMap<String, String>,
    pub customers: BTreeMap<String, Customer>,
    pub cards: Vec<CardEntry>,
}

/// One problem in a roster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line in the file; 0 for the file as a whole.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// The columns a roster file may have; the first five are required. `name` and
/// `phone` are kept by the hub only; a kiosk's own import ignores them. `source` and
/// `last_follow_up` set the customer's protection; `broker_id`, `registered_at` and
/// `expires_at` a broker's report of the customer (the spelling of `kiosk hub import`,
/// which takes these five columns out and reads them itself).
pub const COLUMNS: [&str; 16] = [
    "card",
    "customer_id",
    "surname",
    "title",
    "tier",
    "card_status",
    "consultant_id",
    "consultant_name",
    "note",
    "name",
    "phone",
    "source",
    "last_follow_up",
    "broker_id",
    "registered_at",
    "expires_at",
];
const REQUIRED: usize = 5;

/// Parses a roster CSV (UTF-8, header row first). All problems are returned together.
pub fn parse_csv(bytes: &[u8]) -> Result<Roster, Vec<RowError>> {
    // Excel's "CSV UTF-8" starts with a byte-order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut errors = Vec::new();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![RowError {
            line: 0,
            message: format!(
                "the file is empty; start it with the header row: {}",
                COLUMNS.join(",")
            ),
        }]);
    }
    let header = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(vec![csv_error(&e)]),
    };
    let mut index = [None; COLUMNS.len()];
    for (i, name) in header.iter().enumerate() {
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            Some(c) if index[c].is_some() => errors.push(RowError {
                line: 1,
                message: format!("column {name:?} appears twice; keep one"),
            }),
            Some(c) => index[c] = Some(i),
            None => errors.push(RowError {
                line: 1,
                message: format!(
                    "unknown column {name:?}; the columns are {}",
                    COLUMNS.join(", ")
                ),
            }),
        }
    }
    for (c, name) in COLUMNS.iter().enumerate().take(REQUIRED) {
        if index[c].is_none() {
            errors.push(RowError {
                line: 1,
                message: format!(
                    "required column {name:?} is missing; the header must name at least {}",
                    COLUMNS[..REQUIRED].join(", ")
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut roster = Roster::default();
    // Where each key was first given, to name both lines in a conflict.
    let mut card_line: BTreeMap<CardToken, u64> = BTreeMap::new();
    let mut customer_line: BTreeMap<String, u64> = BTreeMap::new();
    let mut consultant_line: BTreeMap<String, u64> = BTreeMap::new();
    let mut phone_owner: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut rows = 0;
    for result in reader.records() {
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                errors.push(csv_error(&e));
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        rows += 1;
        let get = |c: usize| index[c].and_then(|i| record.get(i)).unwrap_or("");
        let mut bad = |message: String| errors.push(RowError { line, message });

        // A DEZ10 or DEZ8 number becomes its em: token here, so the duplicate check
        // below compares cards, not spellings.
        let (token, low24_only) = match CardToken::parse_written(get(0)) {
            Ok((t, _)) if t.as_str().starts_with(BROKER_CODE_PREFIX) => {
                bad(format!(
                    "card: {t} is a broker's code (带看码), which the kiosk checks against the customer's broker registration; give the customer a membership card, and the registration in broker_id and registered_at"
                ));
                (None, false)
            }
            Ok((t, _)) if t.is_random_uid() => {
                bad(format!(
                    "card: {t} is a random UID (a phone or bank card), which changes on every tap; issue a membership card instead"
                ));
                (None, false)
            }
            Ok((t, spelling)) => (Some(t), spelling == Spelling::Dez8),
            Err(e) => {
                bad(format!("card: {e}"));
                (None, false)
            }
        };
        let customer_id = get(1);
        if customer_id.is_empty() || customer_id.chars().count() > 64 {
            bad("customer_id: write the customer's id from the CRM (1 to 64 characters), e.g. C0001".into());
        }
        let surname = get(2);
        if !valid_surname(surname) {
            bad(format!(
                "surname: {surname:?} is not a family name; write the family name only (e.g. 张 or 欧阳), the screen shows it as 张先生"
            ));
        }
        let title = Title::parse(get(3));
        if title.is_none() {
            bad(format!(
                "title: {:?} is not a title; write mr or ms (先生 or 女士)",
                get(3)
            ));
        }
        let tier = Tier::parse(get(4));
        if tier.is_none() {
            bad(format!(
                "tier: {:?} is not a tier; write normal, silver or gold",
                get(4)
            ));
        }
        let active = match get(5).to_lowercase().as_str() {
            "" | "active" => Some(true),
            "revoked" => Some(false),
            other => {
                bad(format!(
                    "card_status: {other:?} is not a card status; write active or revoked"
                ));
                None
            }
        };
        let (consultant_id, consultant_name) = (get(6), get(7));
        if consultant_id.is_empty() != consultant_name.is_empty() {
            bad(
                "consultant_id and consultant_name go together: fill both, or leave both empty"
                    .into(),
            );
        }
        let note = get(8);
        if note.chars().count() > 200 {
            bad("note: keep it under 200 characters".into());
        }
        let name = get(9);
        if name.chars().count() > 64 || name.chars().any(char::is_control) {
            bad("name: the customer's full name, at most 64 characters".into());
        }
        let phone = match get(10) {
            "" => None,
            text => match kiosk_sync::hub::server::normalize_phone(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    bad(e);
                    None
                }
            },
        };
        let source = match get(11) {
            "" => None,
            text => {
                let source = parse_source(text);
                if source.is_none() {
                    bad(format!(
                        "source: {text:?} is not a source; write outreach, phone, walk_in or broker (拓客, 来电, 自访, 渠道)"
                    ));
                }
                source
            }
        };
        let mut time = |column: &str, text: &str| -> Option<Timestamp> {
            if text.is_empty() {
                return None;
            }
            let parsed = text.parse::<Timestamp>().ok();
            if parsed.is_none() {
                bad(format!(
                    "{column}: {text:?} is not a time; write it with its offset, e.g. 2026-11-01T10:00:00+08:00"
                ));
            }
            parsed
        };
        let last_follow_up = time("last_follow_up", get(12));
        let registered_at = time("registered_at", get(14));
        let expires_at = time("expires_at", get(15));
        let broker_id = get(13);
        if broker_id.is_empty() {
            if !get(14).is_empty() || !get(15).is_empty() {
                bad("registered_at and expires_at belong to a broker registration: fill broker_id too, or leave them empty".into());
            }
        } else if get(14).is_empty() {
            bad(format!(
                "registered_at: a registration with broker {broker_id} needs the time the broker reported the customer, e.g. 2026-11-01T10:00:00+08:00"
            ));
        } else if broker_id.contains(':') || broker_id.chars().count() > 64 {
            bad("broker_id: the broker's id from the CRM, 1 to 64 characters without ':' (it is part of the broker's code qr:broker:BROKER_ID:CUSTOMER_ID)".into());
        }
        if let (Some(from), Some(to)) = (registered_at, expires_at) {
            if to <= from {
                bad("expires_at: a registration expires after it was made; leave it empty for the default period".into());
            }
        }
        let registration = match (broker_id.is_empty(), registered_at) {
            (false, Some(registered_at)) => Some(Registration {
                broker_id: broker_id.to_owned(),
                registered_at,
                expires_at,
            }),
            _ => None,
        };
        if let Some(p) = &phone {
            match phone_owner.get(p) {
                // One number, one customer (design §2); say which line has it, not whose it is.
                Some((owner, first)) if owner != customer_id => bad(format!(
                    "phone: the same number is on line {first} for customer {owner}; a phone number belongs to one customer"
                )),
                Some(_) => {}
                None => {
                    phone_owner.insert(p.clone(), (customer_id.to_owned(), line));
                }
            }
        }

        if let Some(token) = &token {
            if let Some(first) = card_line.get(token) {
                bad(format!(
                    "card {token} is already on line {first}; a card belongs to one row"
                ));
            } else {
                card_line.insert(token.clone(), line);
            }
        }
        if !consultant_id.is_empty() && !consultant_name.is_empty() {
            match roster.consultants.get(consultant_id) {
                Some(name) if name != consultant_name => bad(format!(
                    "consultant {consultant_id} is named {name:?} on line {}; use one name",
                    consultant_line[consultant_id]
                )),
                Some(_) => {}
                None => {
                    roster
                        .consultants
                        .insert(consultant_id.to_owned(), consultant_name.to_owned());
                    consultant_line.insert(consultant_id.to_owned(), line);
                }
            }
        }
        let (Some(token), Some(title), Some(tier), Some(active)) = (token, title, tier, active)
        else {
            continue;
        };
        let customer = Customer {
            id: customer_id.to_owned(),
            surname: surname.to_owned(),
            title,
            tier,
            consultant_id: (!consultant_id.is_empty()).then(|| consultant_id.to_owned()),
            name: (!name.is_empty()).then(|| name.to_owned()),
            phone,
            source,
            last_follow_up,
            registration,
        };
        match roster.customers.get(customer_id) {
            Some(existing) if *existing != customer => bad(format!(
                "customer {customer_id} is given differently on line {}; its surname, title, tier, consultant, name, phone, source, last follow-up and broker registration must match on every row",
                customer_line[customer_id]
            )),
            Some(_) => {}
            None => {
                customer_line.insert(customer_id.to_owned(), line);
                roster.customers.insert(customer_id.to_owned(), customer);
            }
        }
        roster.cards.push(CardEntry {
            token,
            customer_id: customer_id.to_owned(),
            active,
            note: (!note.is_empty()).then(|| note.to_owned()),
            low24_only,
        });
    }
    if rows == 0 && errors.is_empty() {
        errors.push(RowError {
            line: 0,
            message: "the file has a header but no rows; add one row per card".into(),
        });
    }
    if errors.is_empty() {
        Ok(roster)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// A customer's source as people write it: the store's spelling, or the Chinese term.
fn parse_source(text: &str) -> Option<Source> {
    match text.to_lowercase().replace('-', "_").as_str() {
        "拓客" => Some(Source::Outreach),
        "来电" => Some(Source::Phone),
        "自访" => Some(Source::WalkIn),
        "渠道" => Some(Source::Broker),
        other => Source::parse(other),
    }
}

/// A family name: 1–2 Chinese characters (欧阳, 司马), or one Latin word for pinyin or
/// foreign names. Anything longer is probably a full name, which the kiosk must not hold.
pub(crate) fn valid_surname(s: &str) -> bool {
    let n = s.chars().count();
    let cjk =
        |c: char| ('\u{4E00}'..='\u{9FFF}').contains(&c) || ('\u{3400}'..='\u{4DBF}').contains(&c);
    if s.chars().all(cjk) {
        // Two characters are far more often a full name (张伟) than a compound
        // surname, so only the known compound surnames pass.
        return n == 1 || (n == 2 && COMPOUND_SURNAMES.contains(&s));
    }
    let latin = |c: char| c.is_ascii_alphabetic() || c == '-' || c == '\'';
    (1..=20).contains(&n)
        && s.chars().all(latin)
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Chinese compound surnames (复姓) accepted as two-character surnames.
const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "诸葛", "上官", "慕容", "东方", "皇甫", "尉迟", "公孙", "长孙", "宇文", "司徒",
    "司空", "夏侯", "令狐", "澹台", "端木", "轩辕", "南宫", "西门", "呼延", "独孤", "钟离", "闻人",
    "太史", "申屠", "万俟", "赫连", "百里", "东郭", "南门", "羊舌", "微生", "公冶", "濮阳", "淳于",
    "单于", "太叔", "仲孙", "拓跋", "完颜", "纳兰",
];

fn csv_error(e: &csv::Error) -> RowError {
    let line = e.position().map_or(0, csv::Position::line);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "not UTF-8 text; save the file as \"CSV UTF-8\" (in Excel: Save As → CSV UTF-8)"
                .to_owned()
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "has {len} fields but the header has {expected_len}; check for a missing or extra comma (put text containing commas, such as a DEZ8 card number 134,62532, in double quotes)"
        ),
        _ => format!("not readable as CSV: {e}"),
    };
    RowError { line, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note\n";

    #[test]
    fn the_example_file_parses() {
        let roster =
            parse_csv(include_bytes!("../../examples/roster.csv")).expect("example roster");
        assert!(roster.cards.len() >= 4);
        assert!(roster.cards.iter().any(|c| !c.active));
        assert!(roster.consultants.contains_key("E01"));
        assert!(roster.cards.iter().any(|c| c.low24_only), "a DEZ8 row");
    }

    #[test]
    fn rows_normalize() {
        let csv = format!(
            "\u{FEFF}{HEADER}nfc:04a1b2c3,C1,张,先生,金卡,,E1,李娜,\nnfc:04a1b2c4,C1,张,mr,gold,revoked,E1,李娜,lost\n"
        );
        let roster = parse_csv(csv.as_bytes()).expect("valid");
        assert_eq!(roster.cards[0].token.as_str(), "nfc:04A1B2C3");
        assert_eq!(roster.customers["C1"].tier, Tier::Gold);
        assert_eq!(roster.customers["C1"].title, Title::Mr);
        assert!(!roster.cards[1].active);
        assert_eq!(roster.cards[1].note.as_deref(), Some("lost"));
    }

    /// Each case: the `card` cell as written, the token stored, and whether it was DEZ8.
    #[test]
    fn printed_em_numbers_become_em_tokens() {
        let cases: &[(&str, &str, bool)] = &[
            ("em:0086f444", "em:0086F444", false),
            ("0008844356", "em:0086F444", false),
            ("8844356", "em:0086F444", false), // Excel dropped the leading zeros
            ("4294967295", "em:FFFFFFFF", false),
            ("\"134,62532\"", "em:0086F444", true),
            ("134 62532", "em:0086F444", true),
            ("\"255,65535\"", "em:00FFFFFF", true),
        ];
        for (cell, token, low24_only) in cases {
            let csv = format!("{HEADER}{cell},C1,张,mr,gold,,,,\n");
            let roster = parse_csv(csv.as_bytes()).unwrap_or_else(|e| panic!("{cell}: {e:?}"));
            let card = &roster.cards[0];
            assert_eq!(
                (card.token.as_str(), card.low24_only),
                (*token, *low24_only),
                "{cell}"
            );
        }
    }

    /// Each case: file body after the header, then the expected messages.
    #[test]
    fn bad_rows_are_reported_with_line_numbers() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("", "", &["the file has a header but no rows"]),
            (
                "",
                "raw",
                &["the file is empty; start it with the header row"],
            ),
            (
                "nfc:08A1B2C3,C1,张,mr,gold,,,,\nnfc:04A1B2C3,C2,张伟,mr,gold,,,,\nnfc:04A1B2C4,C3,김민준,mr,gold,,,,\nnfc:04A1B2C5,C4,诸葛,ms,gold,,,,\nnfc:04A1B2C6,C5,O'Brien,mr,gold,,,,\n",
                "",
                &[
                    "line 2: card: nfc:08A1B2C3 is a random UID",
                    "line 3: surname: \"张伟\" is not a family name",
                    "line 4: surname: \"김민준\" is not a family name",
                ],
            ),
            (
                "card,customer_id,surname,title,mobile\n",
                "raw",
                &[
                    "line 1: unknown column \"mobile\"",
                    "line 1: required column \"tier\" is missing",
                ],
            ),
            (
                "04A1B2C3,C1,张,mr,gold,,,,\n",
                "",
                &[
                    "line 2: card: \"04A1B2C3\" is not a card token",
                    "DEZ10 (e.g. 0008844356) or DEZ8 (e.g. 134,62532)",
                ],
            ),
            (
                "4294967296,C1,张,mr,gold,,,,\n00000000001,C2,王,ms,gold,,,,\n\"256,1\",C3,李,ms,gold,,,,\n\"1,65536\",C4,赵,mr,gold,,,,\n",
                "",
                &[
                    "line 2: card: \"4294967296\": a DEZ10 number is 1 to 10 digits, at most 4294967295",
                    "line 3: card: \"00000000001\": a DEZ10 number",
                    "line 4: card: \"256,1\": a DEZ8 number is 0-255, a comma or a space, then 0-65535",
                    "line 5: card: \"1,65536\": a DEZ8 number",
                ],
            ),
            (
                // One card in three spellings, and DEZ8 written without quotes.
                "0008844356,C1,张,mr,gold,,,,\nem:0086F444,C2,王,ms,gold,,,,\n\"134,62532\",C3,李,ms,gold,,,,\n134,62532,C4,赵,mr,gold,,,,\n",
                "",
                &[
                    "line 3: card em:0086F444 is already on line 2",
                    "line 4: card em:0086F444 is already on line 2",
                    "line 5: has 10 fields but the header has 9",
                    "such as a DEZ8 card number 134,62532, in double quotes",
                ],
            ),
            (
                "nfc:04A1B2C3,C1,张伟明,mr,gold,,,,\nnfc:04A1B2C4,,王,sir,platinum,lost,E1,,\n",
                "",
                &[
                    "line 2: surname: \"张伟明\" is not a family name",
                    "line 3: customer_id: write the customer's id",
                    "line 3: title: \"sir\" is not a title",
                    "line 3: tier: \"platinum\" is not a tier",
                    "line 3: card_status: \"lost\" is not a card status",
                    "line 3: consultant_id and consultant_name go together",
                ],
            ),
            (
                "nfc:04A1B2C3,C1,张,mr,gold,,E1,李娜,\nnfc:04a1b2c3,C2,王,ms,gold,,E1,李丽,\nnfc:04A1B2C5,C1,张,ms,gold,,E1,李娜,\n",
                "",
                &[
                    "line 3: card nfc:04A1B2C3 is already on line 2",
                    "line 3: consultant E1 is named \"李娜\" on line 2",
                    "line 4: customer C1 is given differently on line 2",
                ],
            ),
            (
                "nfc:04A1B2C3,C1,13800138000,mr,gold,,,,\n",
                "",
                &["line 2: surname: \"13800138000\" is not a family name"],
            ),
            (
                "nfc:04A1B2C3,C1,张,mr,gold\n",
                "",
                &["line 2: has 5 fields but the header has 9"],
            ),
        ];
        for (body, mode, expected) in cases {
            let text = if *mode == "raw" {
                body.to_string()
            } else {
                format!("{HEADER}{body}")
            };
            let errors = parse_csv(text.as_bytes()).expect_err(body);
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            for want in *expected {
                assert!(
                    shown.iter().any(|s| s.contains(want)),
                    "{body:?}: expected {want:?} in {shown:#?}"
                );
            }
        }
    }

    #[test]
    fn names_and_phones_are_for_the_hub_and_one_phone_is_one_customer() {
        let header = "card,customer_id,surname,title,tier,name,phone\n";
        let good = format!(
            "{header}nfc:04A1B2C3,C1,张,mr,gold,张伟,+86 138-0013-8000\nnfc:04A1B2C4,C1,张,mr,gold,张伟,13800138000\nnfc:04A1B2C5,C2,王,ms,normal,,\n"
        );
        let roster = parse_csv(good.as_bytes()).expect("valid");
        assert_eq!(roster.customers["C1"].phone.as_deref(), Some("13800138000"));
        assert_eq!(roster.customers["C1"].name.as_deref(), Some("张伟"));
        assert_eq!(roster.customers["C2"].phone, None);
        let bad = format!(
            "{header}nfc:04A1B2C3,C1,张,mr,gold,,13800138000\nnfc:04A1B2C4,C2,王,ms,gold,,138 0013 8000\nnfc:04A1B2C5,C3,李,ms,gold,,call me\n"
        );
        let shown: Vec<String> = parse_csv(bad.as_bytes())
            .expect_err("conflicts")
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "line 3: phone: the same number is on line 2 for customer C1",
            "line 4: phone: \"call me\" is not a phone number",
        ] {
            assert!(
                shown.iter().any(|s| s.contains(want)),
                "{want:?} in {shown:#?}"
            );
        }
        // The customer's phone and full name appear in no message about another row.
        assert!(shown.iter().all(|s| !s.contains("张伟")));
    }

    #[test]
    fn non_utf8_files_get_a_fix() {
        // "张" in GBK, as Excel writes a plain CSV on a Chinese Windows.
        let mut bytes = HEADER.as_bytes().to_vec();
        bytes.extend_from_slice(b"nfc:04A1B2C3,C1,\xD5\xC5,mr,gold,,,,\n");
        let errors = parse_csv(&bytes).expect_err("GBK");
        assert!(errors[0].to_string().contains("CSV UTF-8"), "{errors:?}");
    }

    #[test]
    fn protection_and_broker_registrations_come_on_customer_rows() {
        let header = "card,customer_id,surname,title,tier,consultant_id,consultant_name,source,last_follow_up,broker_id,registered_at,expires_at\n";
        let csv = format!(
            "{header}nfc:04A1B2C3,C1,张,mr,gold,E1,李娜,来电,2026-11-01T10:00:00+08:00,,,\n\
             nfc:04A1B2C4,C1,张,mr,gold,E1,李娜,phone,2026-11-01T02:00:00Z,,,\n\
             nfc:04A1B2C5,C2,王,ms,normal,,,broker,,B1,2026-11-02T09:00:00+08:00,2026-11-20T00:00:00+08:00\n\
             nfc:04A1B2C6,C3,李,ms,normal,E1,李娜,Walk-In,,B1,2026-11-03T09:00:00+08:00,\n\
             nfc:04A1B2C7,C4,赵,mr,normal,,,,,,,\n"
        );
        let roster = parse_csv(csv.as_bytes()).expect("valid");
        let c1 = &roster.customers["C1"];
        // The same instant in two offsets is the same follow-up.
        assert_eq!(
            (c1.source, c1.last_follow_up),
            (
                Some(Source::Phone),
                Some("2026-11-01T02:00:00Z".parse().unwrap())
            )
        );
        assert_eq!(c1.registration, None);
        let c2 = &roster.customers["C2"];
        assert_eq!(
            c2.registration,
            Some(Registration {
                broker_id: "B1".into(),
                registered_at: "2026-11-02T01:00:00Z".parse().unwrap(),
                expires_at: Some("2026-11-19T16:00:00Z".parse().unwrap()),
            })
        );
        let c3 = &roster.customers["C3"];
        assert_eq!(c3.source, Some(Source::WalkIn));
        assert_eq!(
            c3.registration
                .as_ref()
                .map(|r| (r.broker_id.as_str(), r.expires_at)),
            Some(("B1", None))
        );
        let c4 = &roster.customers["C4"];
        assert_eq!(
            (c4.source, c4.last_follow_up, &c4.registration),
            (None, None, &None)
        );
    }

    #[test]
    fn bad_protection_and_registration_cells_are_reported() {
        let header = "card,customer_id,surname,title,tier,source,last_follow_up,broker_id,registered_at,expires_at\n";
        let body = "\
nfc:04A1B2C3,C1,张,mr,gold,online,yesterday,,,
nfc:04A1B2C4,C2,王,ms,gold,,,,2026-11-01T10:00:00Z,
nfc:04A1B2C5,C3,李,ms,gold,,,B1,,
nfc:04A1B2C6,C4,赵,mr,gold,,,B1,2026-11-05T10:00:00Z,2026-11-05T10:00:00Z
nfc:04A1B2C7,C5,钱,mr,gold,,,B:1,2026-11-05T10:00:00Z,
nfc:04A1B2C8,C6,孙,mr,gold,,,B2,2026-11-05T10:00:00Z,
nfc:04A1B2C9,C6,孙,mr,gold,,,B2,2026-11-06T10:00:00Z,
qr:broker:B1:C1,C8,吴,mr,gold,,,,,
";
        let shown: Vec<String> = parse_csv(format!("{header}{body}").as_bytes())
            .expect_err("bad cells")
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "line 2: source: \"online\" is not a source",
            "line 2: last_follow_up: \"yesterday\" is not a time",
            "line 3: registered_at and expires_at belong to a broker registration",
            "line 4: registered_at: a registration with broker B1 needs",
            "line 5: expires_at: a registration expires after it was made",
            "line 6: broker_id: the broker's id from the CRM",
            "line 8: customer C6 is given differently on line 7",
            "line 9: card: qr:broker:B1:C1 is a broker's code",
        ] {
            assert!(
                shown.iter().any(|s| s.contains(want)),
                "{want:?} in {shown:#?}"
            );
        }
    }
}
