//! Threat intelligence at the orchestrator (issue 16, item 6): a TAXII 2.1 client polling
//! configured collections with `added_after`.
//!
//! Each poll asks `GET <collection>/objects/?added_after=<position>` (the position is the
//! server's `X-TAXII-Date-Added-Last` of the last page read, kept in the store, so a restart
//! neither loses nor repeats), follows the envelope's `more` + `next` pages, and reads each
//! page with the STIX parser of `vacsine-events`: each indicator an event with source
//! `taxii:<collection id>` and its validity (`valid_from`/`valid_until`) kept; a pattern the
//! evaluator cannot handle is reported (an event of its own, summary `not evaluable: …`),
//! never guessed. The password is read from a file and never printed (`Debug` masks it).

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::Duration;
use vacsine_events::{Event, EventKind, Severity};

/// TAXII 2.1's media type.
pub const TAXII_MEDIA: &str = "application/taxii+json;version=2.1";
/// Most pages read in one poll (a server that always says `more` cannot hold the poller).
pub const MAX_PAGES: usize = 1000;
/// Objects asked for per page (`limit`; the server may give fewer).
pub const PAGE_LIMIT: usize = 500;
/// Largest page accepted (the STIX parser's document bound).
pub const MAX_PAGE_BYTES: usize = vacsine_events::limits::MAX_DOCUMENT_BYTES;

/// One configured collection.
#[derive(Clone)]
pub struct Feed {
    /// The collection's URL, ending with `/` (`https://HOST/api1/collections/ID/`).
    pub url: String,
    /// The collection's id (last segment of the URL).
    pub collection: String,
    pub user: Option<String>,
    password: Option<String>,
    /// Time between polls.
    pub every: Duration,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("every", &self.every)
            .finish()
    }
}

impl Feed {
    /// A feed from the command line: the collection URL, the user, a file holding the
    /// password (first line; the file is not kept open), the poll period.
    pub fn new(
        url: &str,
        user: Option<&str>,
        password_file: Option<&Path>,
        every: Duration,
    ) -> anyhow::Result<Feed> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
            anyhow!("--taxii {url}: not a URL ({e}); give https://HOST/API-ROOT/collections/ID/")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--taxii {url}: only http and https are supported; give https://HOST/API-ROOT/collections/ID/");
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            bail!("--taxii: put no user or password in the URL (they would show in `ps`); use --taxii-user and --taxii-password-file");
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            bail!("--taxii {url}: the collection URL takes no query or fragment");
        }
        let segs: Vec<&str> = parsed
            .path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        let n = segs.len();
        if n < 2 || segs[n - 2] != "collections" {
            bail!("--taxii {url}: not a TAXII 2.1 collection URL; give https://HOST/API-ROOT/collections/ID/ (the collection's id last)");
        }
        let collection = segs[n - 1].to_string();
        let mut u = parsed.as_str().to_string();
        if !u.ends_with('/') {
            u.push('/');
        }
        let password = match password_file {
            None => None,
            Some(p) => {
                let t = std::fs::read_to_string(p).with_context(|| {
                    format!("--taxii-password-file {}: cannot read it", p.display())
                })?;
                let first = t.lines().next().unwrap_or("").to_string();
                if first.is_empty() {
                    bail!(
                        "--taxii-password-file {}: the first line is empty; write the password there",
                        p.display()
                    );
                }
                Some(first)
            }
        };
        if password.is_some() && user.is_none() {
            bail!("--taxii-password-file needs --taxii-user");
        }
        if every.is_zero() {
            bail!("--taxii-every: give at least 1 second");
        }
        Ok(Feed {
            url: u,
            collection,
            user: user.map(str::to_string),
            password,
            every,
        })
    }

    /// The event source of this collection's indicators.
    pub fn source(&self) -> String {
        format!("taxii:{}", self.collection)
    }

    /// The key of this feed's position in the store.
    pub fn key(&self) -> String {
        self.url.clone()
    }
}

/// One page of a poll.
#[derive(Debug)]
pub struct Page {
    pub body: Vec<u8>,
    /// `X-TAXII-Date-Added-Last`: the position after this page.
    pub date_added_last: Option<String>,
}

/// An HTTP client for the feeds.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the TAXII client")
}

/// Read every page added after `added_after`; `each` gets the pages in order (it stores
/// them and their position before the next one is asked for).
pub async fn poll<F, Fut>(
    http: &reqwest::Client,
    feed: &Feed,
    added_after: Option<&str>,
    mut each: F,
) -> anyhow::Result<usize>
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = reqwest::Url::parse(&format!("{}objects/", feed.url))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(a) = added_after {
                q.append_pair("added_after", a);
            }
            // Asked on every page: some servers (medallion) need it again with `next`.
            q.append_pair("limit", &PAGE_LIMIT.to_string());
            if let Some(n) = &next {
                q.append_pair("next", n);
            }
        }
        let mut rq = http.get(url).header(reqwest::header::ACCEPT, TAXII_MEDIA);
        if let Some(u) = &feed.user {
            rq = rq.basic_auth(u, feed.password.as_deref());
        }
        let mut resp = rq
            .send()
            .await
            .with_context(|| format!("TAXII {}: request failed", feed.url))?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "TAXII {}: the server answered {status}{}",
                feed.url,
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN
                {
                    " (check --taxii-user and --taxii-password-file)"
                } else {
                    ""
                }
            );
        }
        let date_added_last = resp
            .headers()
            .get("X-TAXII-Date-Added-Last")
            .and_then(|v| v.to_str().ok())
            .filter(|v| vacsine_events::parse_time(v).is_some())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                bail!(
                    "TAXII {}: a page is larger than {MAX_PAGE_BYTES} bytes: refused",
                    feed.url
                );
            }
            body.extend_from_slice(&chunk);
        }
        let (more, n) = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => (
                v.get("more").and_then(|m| m.as_bool()).unwrap_or(false),
                v.get("next").and_then(|n| n.as_str()).map(str::to_string),
            ),
            Err(e) => bail!("TAXII {}: the envelope is not JSON: {e}", feed.url),
        };
        each(Page {
            body,
            date_added_last,
        })
        .await?;
        pages += 1;
        match (more, n) {
            (true, Some(n)) if pages < MAX_PAGES => next = Some(n),
            (true, _) if pages >= MAX_PAGES => {
                tracing::warn!(
                    "TAXII {}: still more after {MAX_PAGES} pages; the rest at the next poll",
                    feed.url
                );
                return Ok(pages);
            }
            _ => return Ok(pages),
        }
    }
}

/// An indicator read from a feed: its event and its validity.
#[derive(Debug, Clone)]
pub struct Intel {
    pub event: Event,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
}

/// The events of one page: each indicator with its validity (source `taxii:<collection>`),
/// and one report event per indicator the parser refused (not evaluable or invalid), with
/// the reason. `at` is the poll's time (the time of the reports).
pub fn read_page(feed: &Feed, body: &[u8], at: DateTime<Utc>) -> (Vec<Intel>, Vec<Event>) {
    // An empty envelope (TAXII 2.1 leaves `objects` out when there is nothing new).
    let empty = serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.is_object()
            && v.get("type").is_none()
            && v.get("objects")
                .is_none_or(|o| o.as_array().is_some_and(|a| a.is_empty()))
    });
    if empty {
        return (Vec::new(), Vec::new());
    }
    let (_, parsed) = vacsine_events::parse_indicators(body);
    let source = feed.source();
    let mut intel = Vec::new();
    for mut e in parsed.events {
        e.source = source.clone();
        let valid_from = e
            .fields
            .get("valid_from")
            .and_then(|t| vacsine_events::parse_time(t));
        let valid_until = e
            .fields
            .get("valid_until")
            .and_then(|t| vacsine_events::parse_time(t));
        e.field("taxii_collection", feed.collection.clone());
        intel.push(Intel {
            event: e.seal(),
            valid_from,
            valid_until,
        });
    }
    let mut reports = Vec::new();
    for err in parsed.errors {
        let kind = if err.kind == vacsine_events::ErrorKind::NotEvaluable {
            "not evaluable"
        } else {
            "refused"
        };
        let mut msg = format!("{kind}: {err}");
        if msg.len() > 4096 {
            let mut cut = 4096;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let mut e = Event::new(
            EventKind::Indicator,
            &source,
            at,
            Severity::Info,
            msg.clone(),
        );
        e.field("taxii_collection", feed.collection.clone());
        e.field("refused", kind);
        intel_report_line(&mut e, &err);
        // The same refusal read again is the same event (its time is the poll's, so two
        // polls of one refused indicator are two reports only if the server sends it twice).
        reports.push(e.seal());
    }
    (intel, reports)
}

fn intel_report_line(e: &mut Event, err: &vacsine_events::ParseError) {
    e.field("line", err.line.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_url_is_checked_and_its_collection_named() {
        let f = Feed::new(
            "http://127.0.0.1:5000/trustgroup1/collections/abc-1",
            None,
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(f.collection, "abc-1");
        assert_eq!(
            f.url,
            "http://127.0.0.1:5000/trustgroup1/collections/abc-1/"
        );
        assert_eq!(f.source(), "taxii:abc-1");
        for bad in [
            "ftp://x/collections/a/",
            "http://u:p@x/collections/a/",
            "http://x/api/a/",
            "not a url",
        ] {
            assert!(
                Feed::new(bad, None, None, Duration::from_secs(5)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, "s3cr3t-pw\n").unwrap();
        let f = Feed::new(
            "https://x/a/collections/c/",
            Some("u"),
            Some(&p),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!format!("{f:?}").contains("s3cr3t"));
        assert!(Feed::new(
            "https://x/a/collections/c/",
            None,
            Some(&p),
            Duration::from_secs(5)
        )
        .is_err());
    }

    #[test]
    fn a_page_gives_events_with_validity_and_reports_what_it_cannot_evaluate() {
        let f = Feed::new(
            "https://x/a/collections/c1/",
            None,
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let page = r#"{"more": false, "objects": [
 {"type":"indicator","spec_version":"2.1","id":"indicator--00000000-0000-4000-8000-000000000001","created":"2026-01-01T00:00:00Z","modified":"2026-01-01T00:00:00Z","pattern":"[ipv4-addr:value = '203.0.113.5']","pattern_type":"stix","valid_from":"2026-01-01T00:00:00Z","valid_until":"2027-01-01T00:00:00Z"},
 {"type":"indicator","spec_version":"2.1","id":"indicator--00000000-0000-4000-8000-000000000002","created":"2026-01-01T00:00:00Z","modified":"2026-01-01T00:00:00Z","pattern":"[ipv4-addr:value = '203.0.113.6'] WITHIN 10 SECONDS","pattern_type":"stix","valid_from":"2026-01-01T00:00:00Z"}
]}"#;
        let (intel, reports) = read_page(&f, page.as_bytes(), Utc::now());
        assert_eq!(intel.len(), 1);
        assert_eq!(intel[0].event.source, "taxii:c1");
        assert_eq!(intel[0].event.id, intel[0].event.content_id());
        assert!(intel[0].valid_until.is_some());
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(
            reports[0].summary.starts_with("not evaluable"),
            "{}",
            reports[0].summary
        );
        assert!(reports[0].observables.is_empty());
        for empty in [r#"{}"#, r#"{"more": false}"#, r#"{"objects": []}"#] {
            let (i, r) = read_page(&f, empty.as_bytes(), Utc::now());
            assert!(i.is_empty() && r.is_empty(), "{empty}: {r:?}");
        }
        let (_, r) = read_page(&f, b"[1]", Utc::now());
        assert_eq!(r.len(), 1, "not a STIX envelope: reported");
    }
}
