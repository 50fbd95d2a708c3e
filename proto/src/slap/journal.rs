//! The usage journal a SlapOS node posts with `useComputer` (`use_string`) or JSON-RPC
//! `compute_node_usage` (`tioxml`): the TioSafe XML of `slap/doc/computer_consumption.xsd`.
//!
//! Two writers exist in slapos.core 1.26.1 and both are read here:
//!
//! * `slapos.collect`'s `ConsumptionReport` (a `Journal` per day): one transaction with
//!   `start_date` / `stop_date` (`YYYY-MM-DD HH:MM:SS`), movements whose `resource` is
//!   `service_module/cpu_load_percent`, `…/memory_used` (MB) or `…/disk_used` (MB) and whose
//!   `reference` is the partition's user (`slapuserN`) or the computer itself;
//! * slapgrid's `asXML` (partitions' own `etc/report` scripts): an empty `start_date`, a
//!   `stop_date` written `YYYY-MM-DD at HH:MM:SS`, and movements whose `reference` is the
//!   partition id.
//!
//! [`parse_journal`] decodes: what a movement means for accounting is the master's business.
//! [`JournalWriter`] writes the document slapos.collect writes (a node reporting its usage over
//! SLAP), [`journal_date`] its dates. The reader is the codec's hardened one (no DOCTYPE, invalid characters refused), elements
//! it does not know (`arrow`, `price`, `VAT`, `category`, …) are skipped, and a document holds
//! at most [`MAX_MOVEMENTS`] movements.

use super::error::EncodeError;
use super::pyrepr::float_repr;
use super::xmltext::{Ev, ReadError, XmlEvents, push_text_utf8};

/// Movements read from one journal at most (a node reports a few per partition per day).
pub const MAX_MOVEMENTS: usize = 100_000;

/// A decoded journal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    /// Its `<transaction>` elements, in document order.
    pub transactions: Vec<Transaction>,
}

/// One `<transaction>`: a period and what was consumed in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    /// `<title>` (empty when absent).
    pub title: String,
    /// `<start_date>` as written (may be empty: slapgrid's `asXML`).
    pub start_date: String,
    /// `<stop_date>` as written.
    pub stop_date: String,
    /// `<reference>` (a date scope or the computer id).
    pub reference: String,
    /// Its movements, in document order.
    pub movements: Vec<Movement>,
}

/// One `<movement>`: a quantity of a resource, for a reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Movement {
    /// `<resource>`, e.g. `service_module/cpu_load_percent`.
    pub resource: String,
    /// `<reference>`: a partition id, a partition user or the computer id (empty if absent).
    pub reference: String,
    /// `<quantity>`.
    pub quantity: f64,
}

/// Why a journal was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JournalError {
    /// Not well-formed XML.
    #[error("usage journal: malformed XML near byte {position}: {message}")]
    Xml {
        /// Byte offset where the parser stopped.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// A DOCTYPE (never accepted).
    #[error("usage journal: a DOCTYPE declaration is not accepted")]
    Doctype,
    /// The root element is not `<journal>`.
    #[error("usage journal: the root element must be <journal>, found {found}")]
    NotJournal {
        /// What was found (`<name>` or `nothing`).
        found: String,
    },
    /// A `<quantity>` that is not a finite number.
    #[error("usage journal: movement {index} has quantity {text:?}, which is not a number")]
    Quantity {
        /// 1-based index of the movement in the document.
        index: usize,
        /// The text found.
        text: String,
    },
    /// More than [`MAX_MOVEMENTS`] movements.
    #[error("usage journal: more than {MAX_MOVEMENTS} movements")]
    TooLarge,
}

impl From<ReadError> for JournalError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Syntax { position, message } => Self::Xml { position, message },
            ReadError::Doctype => Self::Doctype,
        }
    }
}

/// Decode a journal document.
pub fn parse_journal(xml: &str) -> Result<Journal, JournalError> {
    let mut events = XmlEvents::new(xml);
    let mut journal = Journal::default();
    // Element names from the root down to the current element.
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut movements = 0usize;
    let mut root_seen = false;
    loop {
        let (name, empty) = match events.next()? {
            Ev::Start(s) => (s.name().0.to_owned(), false),
            Ev::Empty(s) => (s.name().0.to_owned(), true),
            Ev::Text(t) => {
                text.push_str(&t);
                continue;
            }
            Ev::Other => continue,
            Ev::End => {
                let leaf = path.pop().unwrap_or_default();
                field(&mut journal, &path, &leaf, text.trim(), movements)?;
                text.clear();
                continue;
            }
            Ev::Eof => break,
        };
        text.clear();
        match (path.len(), name.as_str()) {
            (0, "journal") if !root_seen => root_seen = true,
            (0, _) => {
                return Err(JournalError::NotJournal {
                    found: format!("<{name}>"),
                });
            }
            (1, "transaction") => journal.transactions.push(Transaction::default()),
            (2, "movement") => {
                movements += 1;
                if movements > MAX_MOVEMENTS {
                    return Err(JournalError::TooLarge);
                }
                if let Some(t) = journal.transactions.last_mut() {
                    t.movements.push(Movement::default());
                }
            }
            _ => {}
        }
        if empty {
            field(&mut journal, &path, &name, "", movements)?;
        } else {
            path.push(name);
        }
    }
    if !root_seen {
        return Err(JournalError::NotJournal {
            found: "nothing".to_owned(),
        });
    }
    if !path.is_empty() {
        return Err(JournalError::Xml {
            position: events.position(),
            message: "unexpected end of document: unclosed elements".to_owned(),
        });
    }
    Ok(journal)
}

/// An element `leaf` under `parents` ended with `text`: keep it if the journal has a place
/// for it. `movements` counts the movements opened so far (the current one's index).
fn field(
    journal: &mut Journal,
    parents: &[String],
    leaf: &str,
    text: &str,
    movements: usize,
) -> Result<(), JournalError> {
    let Some(t) = journal.transactions.last_mut() else {
        return Ok(());
    };
    let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
    match parents[..] {
        ["journal", "transaction"] => {
            let slot = match leaf {
                "title" => &mut t.title,
                "start_date" => &mut t.start_date,
                "stop_date" => &mut t.stop_date,
                "reference" => &mut t.reference,
                _ => return Ok(()),
            };
            text.clone_into(slot);
        }
        ["journal", "transaction", "movement"] => {
            let Some(m) = t.movements.last_mut() else {
                return Ok(());
            };
            match leaf {
                "resource" => text.clone_into(&mut m.resource),
                "reference" => text.clone_into(&mut m.reference),
                "quantity" => {
                    m.quantity = text
                        .parse::<f64>()
                        .ok()
                        .filter(|q| q.is_finite())
                        .ok_or_else(|| JournalError::Quantity {
                            index: movements,
                            text: text.chars().take(40).collect(),
                        })?;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// A journal date as unix milliseconds (UTC: the journal carries no zone): `YYYY-MM-DD`,
/// `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS` or slapgrid's `YYYY-MM-DD at HH:MM:SS`.
/// `None` for an empty or malformed date.
pub fn journal_date_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = match s.split_once(" at ") {
        Some(dt) => dt,
        None => match s.find([' ', 'T']) {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, "00:00:00"),
        },
    };
    let num = |v: &str, lo: i64, hi: i64| -> Option<i64> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok().filter(|n| (lo..=hi).contains(n))
    };
    let mut d = date.splitn(3, '-');
    let (y, mo, day) = (
        num(d.next()?, 1970, 9999)?,
        num(d.next()?, 1, 12)?,
        num(d.next()?, 1, 31)?,
    );
    let mut t = time.trim().splitn(3, ':');
    let (h, mi) = (num(t.next()?, 0, 23)?, num(t.next()?, 0, 59)?);
    let (sec, ms) = match t.next() {
        Some(v) => {
            let (s, frac) = v.split_once('.').unwrap_or((v, "0"));
            // A fraction (what [`journal_date`] writes) counts to the millisecond.
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ms = frac
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0, |a, b| a * 10 + i64::from(b - b'0'));
            (num(s, 0, 60)?, ms)
        }
        None => (0, 0),
    };
    let days = days_from_civil(y, mo, day);
    u64::try_from((((days * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms).ok()
}

/// Unix milliseconds as a journal date (UTC): `YYYY-MM-DD HH:MM:SS`, slapos.collect's form,
/// with `.mmm` when the time is not a whole second (read back by [`journal_date_ms`]).
pub fn journal_date(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // u64 milliseconds: at most 2.2e11 days, well within i64.
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if !ms.is_multiple_of(1000) {
        out.push_str(&format!(".{:03}", ms % 1000));
    }
    out
}

/// Writes a journal as slapos.collect's `Journal` does (lxml's `tostring` behind the
/// `<?xml …?>` declaration: an element with empty text is `<x></x>`, one without `<x/>`): each transaction a `Sale Packing List` with its `title`,
/// `start_date`, `stop_date`, `reference`, empty `currency`, `payment_mode`, `category` and a
/// `Destination` arrow; each movement its `resource`, `title`, `reference`, `quantity` (Python
/// `str(float)`), `price` `0.0`, empty `VAT` and `category`. Text is escaped as lxml
/// does (`& < >`, `\r`); a character XML cannot carry is an error.
#[derive(Debug)]
pub struct JournalWriter {
    out: String,
    open: bool,
}

impl Default for JournalWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl JournalWriter {
    /// An empty journal.
    pub fn new() -> Self {
        Self {
            out: "<?xml version='1.0' encoding='utf-8'?><journal>".to_owned(),
            open: false,
        }
    }

    /// `<name>text</name>` for each pair.
    fn fields(&mut self, fields: &[(&str, &str)]) -> Result<(), EncodeError> {
        for (name, text) in fields {
            self.out.push('<');
            self.out.push_str(name);
            self.out.push('>');
            push_text_utf8(&mut self.out, text, "journal text")?;
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
        Ok(())
    }

    fn close(&mut self) {
        if self.open {
            self.out.push_str("</transaction>");
            self.open = false;
        }
    }

    /// Start a transaction (ending the previous one): the period `start_date` → `stop_date`
    /// ([`journal_date`]).
    pub fn transaction(
        &mut self,
        title: &str,
        start_date: &str,
        stop_date: &str,
        reference: &str,
    ) -> Result<(), EncodeError> {
        self.close();
        self.out
            .push_str("<transaction type=\"Sale Packing List\">");
        self.open = true;
        self.fields(&[
            ("title", title),
            ("start_date", start_date),
            ("stop_date", stop_date),
            ("reference", reference),
            ("currency", ""),
            ("payment_mode", ""),
            ("category", ""),
        ])?;
        self.out.push_str("<arrow type=\"Destination\"/>");
        Ok(())
    }

    /// A movement of the current transaction (call [`JournalWriter::transaction`] first).
    pub fn movement(
        &mut self,
        resource: &str,
        title: &str,
        reference: &str,
        quantity: f64,
    ) -> Result<(), EncodeError> {
        self.out.push_str("<movement>");
        self.fields(&[
            ("resource", resource),
            ("title", title),
            ("reference", reference),
            ("quantity", &float_repr(quantity)),
            ("price", "0.0"),
            ("VAT", ""),
            ("category", ""),
        ])?;
        self.out.push_str("</movement>");
        Ok(())
    }

    /// The document.
    pub fn finish(mut self) -> String {
        self.close();
        if self.out.ends_with("<journal>") {
            self.out.truncate(self.out.len() - 1);
            self.out.push_str("/>");
        } else {
            self.out.push_str("</journal>");
        }
        self.out
    }
}

/// The user a journal names for partition `partition`: `slapuserN` for `slappartN` (SlapOS's
/// format names both from one number), else the partition id itself.
pub fn journal_user(partition: &str) -> String {
    match partition.strip_prefix("slappart") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("slapuser{n}"),
        _ => partition.to_owned(),
    }
}

/// The partition a journal's user `reference` stands for: `slappartN` for `slapuserN` (the
/// inverse of [`journal_user`]), `None` for any other reference.
pub fn journal_partition(reference: &str) -> Option<String> {
    reference
        .strip_prefix("slapuser")
        .map(|n| format!("slappart{n}"))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm);
/// the inverse of [`days_from_civil`]. The node's log timestamps use it too.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `slapos.collect`'s `Journal` writes (`ConsumptionReport.buildXMLReport`, lxml).
    const COLLECT: &str = "<?xml version='1.0' encoding='utf-8'?><journal><transaction \
        type=\"Sale Packing List\"><title>Eco Information for COMP-1 </title><start_date>\
        2026-12-01 00:00:00</start_date><stop_date>2026-12-01 23:59:59</stop_date><reference>\
        2026-12-01-global</reference><currency></currency><payment_mode></payment_mode>\
        <category></category><arrow type=\"Destination\"/><movement><resource>\
        service_module/cpu_load_percent</resource><title>CPU Load Percent Average for \
        slapuser0</title><reference>slapuser0</reference><quantity>12.5</quantity><price>0.0\
        </price><VAT></VAT><category></category></movement></transaction></journal>";

    #[test]
    fn reads_what_slapos_collect_writes() {
        let j = parse_journal(COLLECT).unwrap();
        assert_eq!(j.transactions.len(), 1);
        let t = &j.transactions[0];
        assert_eq!(t.start_date, "2026-12-01 00:00:00");
        assert_eq!(t.stop_date, "2026-12-01 23:59:59");
        assert_eq!(t.reference, "2026-12-01-global");
        assert_eq!(
            t.movements,
            [Movement {
                resource: "service_module/cpu_load_percent".into(),
                reference: "slapuser0".into(),
                quantity: 12.5,
            }]
        );
    }

    #[test]
    fn dates_are_utc_in_every_form_the_writers_use() {
        let day = 1_764_547_200_000; // 2025-12-01T00:00:00Z
        assert_eq!(journal_date_ms("2025-12-01"), Some(day));
        assert_eq!(journal_date_ms("2025-12-01 00:00:10"), Some(day + 10_000));
        assert_eq!(
            journal_date_ms("2025-12-01T01:00:00"),
            Some(day + 3_600_000)
        );
        assert_eq!(
            journal_date_ms("2025-12-01 at 23:59:59"),
            Some(day + 86_399_000)
        );
        assert_eq!(journal_date_ms("1970-01-01"), Some(0));
        for bad in [
            "",
            "2025-13-01",
            "2025-12-01 25:00:00",
            "yesterday",
            "2025-12-01 at",
        ] {
            assert_eq!(journal_date_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_documents_are_refused_with_what_is_wrong() {
        let e = parse_journal("<marshal/>").unwrap_err();
        assert!(e.to_string().contains("<marshal>"), "{e}");
        assert!(matches!(
            parse_journal(""),
            Err(JournalError::NotJournal { .. })
        ));
        let e = parse_journal(&COLLECT.replace("12.5", "lots")).unwrap_err();
        assert_eq!(
            e,
            JournalError::Quantity {
                index: 1,
                text: "lots".into()
            }
        );
        assert!(matches!(
            parse_journal("<journal><transaction>"),
            Err(JournalError::Xml { .. })
        ));
        assert!(matches!(
            parse_journal("<!DOCTYPE x [<!ENTITY a 'b'>]><journal/>"),
            Err(JournalError::Doctype)
        ));
        let many = format!(
            "<journal><transaction>{}</transaction></journal>",
            "<movement/>".repeat(MAX_MOVEMENTS + 1)
        );
        assert_eq!(parse_journal(&many), Err(JournalError::TooLarge));
    }

    #[test]
    fn partition_users_map_both_ways() {
        assert_eq!(journal_user("slappart12"), "slapuser12");
        assert_eq!(journal_user("slappart"), "slappart");
        assert_eq!(journal_user("slappartx"), "slappartx");
        assert_eq!(journal_user("web-1"), "web-1");
        assert_eq!(
            journal_partition("slapuser12").as_deref(),
            Some("slappart12")
        );
        assert_eq!(journal_partition("web-1"), None);
    }

    #[test]
    fn dates_written_read_back_to_the_millisecond() {
        let day = 1_764_547_200_000; // 2025-12-01T00:00:00Z
        assert_eq!(journal_date(day), "2025-12-01 00:00:00");
        assert_eq!(journal_date(day + 86_399_000), "2025-12-01 23:59:59");
        assert_eq!(journal_date(day + 61_005), "2025-12-01 00:01:01.005");
        assert_eq!(journal_date(0), "1970-01-01 00:00:00");
        assert_eq!(journal_date(951_782_400_000), "2000-02-29 00:00:00");
        for ms in [
            0,
            day,
            day + 1,
            day + 999,
            951_782_400_123,
            4_102_444_800_000,
        ] {
            assert_eq!(journal_date_ms(&journal_date(ms)), Some(ms), "{ms}");
        }
        assert_eq!(journal_date_ms("2025-12-01 00:00:01.5"), Some(day + 1500));
        assert_eq!(
            journal_date_ms("2025-12-01 00:00:01.123456"),
            Some(day + 1123)
        );
        for bad in [
            "2025-12-01 00:00:01.",
            "2025-12-01 00:00:01.x",
            "2025-12-01 00:00:.5",
        ] {
            assert_eq!(journal_date_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_the_writer_writes_parses_to_the_same_movements() {
        let mut w = JournalWriter::new();
        w.transaction(
            "Eco Information for COMP-1 ",
            "2026-12-01 00:00:00",
            "2026-12-01 23:59:59",
            "2026-12-01-global",
        )
        .unwrap();
        w.movement(
            "service_module/cpu_load_percent",
            "CPU Load Percent Average for slapuser0",
            "slapuser0",
            12.5,
        )
        .unwrap();
        // Byte for byte what slapos.collect wrote in `COLLECT` (tests/tests/slap_node.rs
        // compares with the real library for more values).
        assert_eq!(w.finish(), COLLECT);
        let mut w = JournalWriter::new();
        let movements = [
            ("service_module/cpu_load_percent", "slapuser1", 0.1 + 0.2),
            ("service_module/memory_used", "slappart1", 1e-7),
            ("service_module/disk_used", "a&b<c>", 123_456_789.0),
        ];
        for (i, (start, stop)) in [(0, 1500), (1500, 2500)].into_iter().enumerate() {
            w.transaction(
                "t",
                &journal_date(start),
                &journal_date(stop),
                &format!("r{i}"),
            )
            .unwrap();
            for (res, r, q) in movements {
                w.movement(res, "m", r, q).unwrap();
            }
        }
        let j = parse_journal(&w.finish()).unwrap();
        assert_eq!(j.transactions.len(), 2);
        let t = &j.transactions[1];
        assert_eq!(
            (t.reference.as_str(), journal_date_ms(&t.start_date)),
            ("r1", Some(1500))
        );
        assert_eq!(journal_date_ms(&t.stop_date), Some(2500));
        let want: Vec<Movement> = movements
            .iter()
            .map(|(res, r, q)| Movement {
                resource: (*res).into(),
                reference: (*r).into(),
                quantity: *q,
            })
            .collect();
        assert_eq!(t.movements, want);
        assert_eq!(
            JournalWriter::new().finish(),
            "<?xml version='1.0' encoding='utf-8'?><journal/>"
        );
        assert!(
            JournalWriter::new()
                .transaction("\u{1}", "", "", "")
                .is_err()
        );
    }

    #[test]
    fn an_empty_journal_is_empty() {
        assert_eq!(parse_journal("<journal/>").unwrap(), Journal::default());
    }
}
