//! The operator's page (`GET /admin`, on with `server.admin_page`) and the admin routes it
//! reads: the totals of `GET /api/admin/stats`, the paged project list of
//! `GET /api/admin/projects`, a project's presence (`GET /api/admin/projects/{p}/presence`)
//! and its live tail (`GET /api/admin/projects/{p}/tail`).
//!
//! The page holds no secret and embeds nothing from outside: it asks the operator for an
//! admin API key, keeps it in the tab's `sessionStorage` and sends it as
//! `Authorization: Bearer` on every call, never in a URL (so it never reaches an access
//! log, a history entry or a `Referer`). Its script and style are files of their own, so
//! the page's CSP allows no inline code at all.
//!
//! The selections (a page of projects after a cursor, the busiest projects) are bounded:
//! whatever the number of projects, a request keeps at most `limit + 1` (or `k`) of them,
//! taken shard by shard under each shard's lock in turn.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use ws_core::{Ops, ProjectId, UserId};
use ws_transport::{Admitted, RemoteAddr, SharedHub, Upgrader, json_error};

use crate::http::{Body, json, not_found, percent_decode};

/// The page.
pub const INDEX_HTML: &str = include_str!("../assets/admin/index.html");
/// Its script, an ES module.
pub const ADMIN_JS: &str = include_str!("../assets/admin/admin.js");
/// Its style sheet.
pub const ADMIN_CSS: &str = include_str!("../assets/admin/admin.css");

/// The page's Content-Security-Policy: its own script, style and API, nothing else (the
/// favicon is an empty `data:` URL, so the browser asks for no `/favicon.ico`).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src data:; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// The user an operator's tail registers as: it is a member of the project like any
/// stream, so it shows in the project's connections and presence under this name.
pub const TAIL_USER: &str = "~admin";

/// `limit` of `GET /api/admin/projects` when absent.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` of `GET /api/admin/projects`.
pub const MAX_LIMIT: usize = 1000;
/// The busiest projects `GET /api/admin/stats` lists.
pub const BUSIEST: usize = 10;
/// The longest cursor accepted: a project id, or a personal stream's name.
const MAX_CURSOR: usize = 1024;

/// `GET /admin`, `/admin/admin.js`, `/admin/admin.css`; `None` for another asset.
pub fn asset(name: &str) -> Option<Response<Body>> {
    let (body, content_type) = match name {
        "" => (INDEX_HTML, "text/html; charset=utf-8"),
        "admin.js" => (ADMIN_JS, "text/javascript; charset=utf-8"),
        "admin.css" => (ADMIN_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Body::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(response)
}

/// The query of `GET /api/admin/projects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// List the projects whose id sorts after this one (the `next_cursor` of the previous
    /// page); `None` starts at the first.
    pub cursor: Option<String>,
    /// How many projects at most.
    pub limit: usize,
}

impl PageQuery {
    /// `cursor=<id>&limit=<1..=1000>`, both optional (an empty value is absent); the
    /// cursor is percent-decoded. Anything else (another parameter, a limit out of range or
    /// not a number, a bad encoding) is refused with the message to answer.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut page = Self {
            cursor: None,
            limit: DEFAULT_LIMIT,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!("{pair:?} has no value: use cursor=<id>&limit=<n>"));
            };
            match key {
                "cursor" if value.is_empty() => page.cursor = None,
                "cursor" => {
                    let cursor = percent_decode(value).map_err(|e| format!("cursor: {e}"))?;
                    if cursor.len() > MAX_CURSOR {
                        return Err(format!("cursor is over {MAX_CURSOR} bytes"));
                    }
                    page.cursor = Some(cursor);
                }
                "limit" if value.is_empty() => page.limit = DEFAULT_LIMIT,
                "limit" => match value.parse::<usize>() {
                    Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => page.limit = limit,
                    _ => return Err(format!("limit must be an integer from 1 to {MAX_LIMIT}")),
                },
                _ => return Err(format!("unknown parameter {key:?}: use cursor and limit")),
            }
        }
        Ok(page)
    }
}

/// A page of projects in id order, chosen while the projects are visited one at a time:
/// it never holds more than `limit + 1` of them (the extra one says a next page exists).
#[derive(Debug)]
pub struct ProjectPage {
    query: PageQuery,
    kept: BTreeMap<ProjectId, usize>,
}

impl ProjectPage {
    /// An empty selection for `query`.
    pub fn new(query: PageQuery) -> Self {
        Self {
            query,
            kept: BTreeMap::new(),
        }
    }

    /// Considers `project`, which has `members` members.
    pub fn offer(&mut self, project: &ProjectId, members: usize) {
        if let Some(cursor) = &self.query.cursor
            && project.as_str() <= cursor.as_str()
        {
            return;
        }
        if self.kept.len() > self.query.limit {
            match self.kept.last_key_value() {
                Some((last, _)) if last.as_str() > project.as_str() => {}
                _ => return,
            }
        }
        self.kept.insert(project.clone(), members);
        if self.kept.len() > self.query.limit + 1 {
            self.kept.pop_last();
        }
    }

    /// The page, and the cursor of the next one when there is more.
    pub fn finish(mut self) -> (Vec<(ProjectId, usize)>, Option<String>) {
        let more = self.kept.len() > self.query.limit;
        if more {
            self.kept.pop_last();
        }
        let page: Vec<_> = self.kept.into_iter().collect();
        let next = more
            .then(|| page.last().map(|(p, _)| p.as_str().to_owned()))
            .flatten();
        (page, next)
    }
}

/// The `k` projects with the most members (ties: the smaller id first), chosen while the
/// projects are visited one at a time, holding at most `k`.
#[derive(Debug)]
pub struct Busiest {
    k: usize,
    /// A min-heap of the best so far: its top is the one to drop next.
    heap: BinaryHeap<Reverse<(usize, Reverse<ProjectId>)>>,
}

impl Busiest {
    /// An empty selection of `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Considers `project`, which has `members` members.
    pub fn offer(&mut self, project: &ProjectId, members: usize) {
        if self.k == 0 {
            return;
        }
        // Cheap refusal of the many that cannot enter, without cloning their id.
        if self.heap.len() == self.k
            && let Some(Reverse((least, Reverse(id)))) = self.heap.peek()
            && (members < *least || (members == *least && project >= id))
        {
            return;
        }
        self.heap.push(Reverse((members, Reverse(project.clone()))));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The selection, busiest first.
    pub fn finish(self) -> Vec<(ProjectId, usize)> {
        let mut list: Vec<_> = self
            .heap
            .into_iter()
            .map(|Reverse((n, Reverse(p)))| (p, n))
            .collect();
        list.sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
        list
    }
}

fn project_list(list: &[(ProjectId, usize)]) -> Vec<serde_json::Value> {
    list.iter()
        .map(|(p, n)| serde_json::json!({"project": p.as_str(), "members": n}))
        .collect()
}

/// `GET /api/admin/stats`: the node's totals, for the page to turn into rates, and its
/// busiest projects.
pub fn stats(hub: &SharedHub) -> Response<Body> {
    let totals = hub.metrics().totals();
    let mut busiest = Busiest::new(BUSIEST);
    hub.visit_projects(|p, n| busiest.offer(p, n));
    let body = serde_json::json!({
        "connections": hub.connections(),
        "projects": hub.project_count(),
        "published_total": totals.published,
        "messages_in_total": totals.messages_in,
        "messages_out_total": totals.messages_out,
        "busiest": project_list(&busiest.finish()),
    });
    json(StatusCode::OK, &body.to_string())
}

/// `GET /api/admin/projects?cursor=&limit=`: the projects with members on this node, in id
/// order, with their member counts; `next_cursor` is `null` on the last page.
pub fn projects(hub: &SharedHub, query: &str) -> Response<Body> {
    let query = match PageQuery::parse(query) {
        Ok(query) => query,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, "invalid_query", &message),
    };
    let mut page = ProjectPage::new(query);
    hub.visit_projects(|p, n| page.offer(p, n));
    let (list, next) = page.finish();
    let body = serde_json::json!({
        "projects": project_list(&list),
        "next_cursor": next,
    });
    json(StatusCode::OK, &body.to_string())
}

/// `GET /api/admin/projects/{project}/presence`: the project's users with their connection
/// counts across the deployment (the broker's view: this node's alone on the memory broker),
/// as `GET /api/projects/{project}/presence` answers it, for the admin key.
pub async fn presence(upgrader: &Upgrader, project: &str) -> Response<Body> {
    let Ok(project) = ProjectId::parse(project) else {
        return not_found();
    };
    let local = upgrader.hub().presence(&project);
    match upgrader.broker().presence(&project, local).await {
        Ok(users) => {
            let users: Vec<serde_json::Value> = users
                .into_iter()
                .map(|(user, n)| serde_json::json!({"user": user.as_str(), "connections": n}))
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({ "users": users }).to_string(),
            )
        }
        Err(e) => crate::api::unavailable(&e),
    }
}

/// `GET /api/admin/projects/{project}/tail`: the project's live messages as server-sent
/// events, as `GET /sse/projects/{project}` sends them to the user [`TAIL_USER`] (read with
/// `fetch`, which can send the key in a header where an `EventSource` could not).
pub fn tail(upgrader: &Upgrader, project: &str, remote: Option<&RemoteAddr>) -> Response<Body> {
    let Ok(project) = ProjectId::parse(project) else {
        return not_found();
    };
    upgrader.event_stream(Admitted {
        user: UserId::new(TAIL_USER),
        project,
        expires_at: None,
        since: None,
        remote: remote.map(|r| r.0),
        ops: Ops::NONE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> ProjectId {
        ProjectId::parse(id).unwrap()
    }

    fn query(cursor: Option<&str>, limit: usize) -> PageQuery {
        PageQuery {
            cursor: cursor.map(str::to_owned),
            limit,
        }
    }

    #[test]
    fn page_queries_are_strict() {
        assert_eq!(PageQuery::parse(""), Ok(query(None, DEFAULT_LIMIT)));
        assert_eq!(
            PageQuery::parse("cursor=&limit="),
            Ok(query(None, DEFAULT_LIMIT))
        );
        assert_eq!(
            PageQuery::parse("cursor=chat%3A1&limit=5"),
            Ok(query(Some("chat:1"), 5))
        );
        assert_eq!(PageQuery::parse("limit=1000"), Ok(query(None, 1000)));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=ten",
            "limit=1.5",
            "cursor=%zz",
            "page=2",
            "limit",
        ] {
            assert!(PageQuery::parse(bad).is_err(), "{bad}");
        }
        let long = format!("cursor={}", "a".repeat(MAX_CURSOR + 1));
        assert!(PageQuery::parse(&long).is_err());
    }

    /// Pages through `ids` with `limit`, offering them in the given (unsorted) order.
    fn pages(ids: &[&str], limit: usize) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let mut page = ProjectPage::new(query(cursor.as_deref(), limit));
            for (i, id) in ids.iter().enumerate() {
                page.offer(&p(id), i);
                assert!(page.kept.len() <= limit + 1, "bounded");
            }
            let (list, next) = page.finish();
            out.push(list.iter().map(|(p, _)| p.as_str().to_owned()).collect());
            match next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_cover_every_project_once_in_order() {
        let ids = ["m", "b", "z", "a", "q", "c", "y"];
        assert_eq!(
            pages(&ids, 3),
            [vec!["a", "b", "c"], vec!["m", "q", "y"], vec!["z"]]
        );
        assert_eq!(pages(&ids, 7), [vec!["a", "b", "c", "m", "q", "y", "z"]]);
        assert_eq!(pages(&[], 3), [Vec::<String>::new()]);
        // A cursor that names no project still pages from where it sorts.
        let mut page = ProjectPage::new(query(Some("n"), 2));
        for id in ids {
            page.offer(&p(id), 1);
        }
        let (list, next) = page.finish();
        assert_eq!(list, vec![(p("q"), 1), (p("y"), 1)]);
        assert_eq!(next.as_deref(), Some("y"));
    }

    #[test]
    fn busiest_keeps_the_k_largest_ties_by_id() {
        let mut busiest = Busiest::new(3);
        for (id, n) in [("a", 1), ("b", 5), ("c", 3), ("d", 5), ("e", 2), ("f", 3)] {
            busiest.offer(&p(id), n);
            assert!(busiest.heap.len() <= 3);
        }
        assert_eq!(
            busiest.finish(),
            vec![(p("b"), 5), (p("d"), 5), (p("c"), 3)]
        );
        let mut none = Busiest::new(0);
        none.offer(&p("a"), 1);
        assert_eq!(none.finish(), vec![]);
    }
}
