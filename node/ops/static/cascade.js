// The cascade page: polls /cascade.json every 2 s and draws parent, this node and its subtree.
// Every field is read defensively (missing or odd → "?") and all text goes through textContent.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const TIMEOUT_MS = 5000;
  const LINK_ORDER = ["local", "parent"];

  let lastOkMs = null;

  // ---- small helpers -------------------------------------------------------------------------

  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const obj = (v) => (isObj(v) ? v : {});
  const list = (v) => (Array.isArray(v) ? v : []);

  function str(v) {
    if (typeof v === "string" && v !== "") return v;
    if (isNum(v) || typeof v === "boolean") return String(v);
    return "?";
  }

  // el("div", {class: "x", "data-region": "1", title: "t"}, child, "text", ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function clock(ms) {
    if (!isNum(ms)) return "?";
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function count(v) {
    return isNum(v) ? Math.round(v).toLocaleString("en-US") : "?";
  }

  function rate(v) {
    if (!isNum(v)) return "?";
    return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1);
  }

  function duration(s) {
    if (!isNum(s)) return "?";
    const v = Math.max(0, s);
    if (v < 60) return `${v.toFixed(1)} s`;
    if (v < 3600) return `${(v / 60).toFixed(1)} min`;
    if (v < 48 * 3600) return `${(v / 3600).toFixed(1)} h`;
    return `${(v / 86400).toFixed(1)} d`;
  }

  function hop(s) {
    if (!isNum(s)) return "?";
    if (s < 1) {
      const ms = s * 1000;
      return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
    }
    return `${s.toFixed(2)} s`;
  }

  const upValue = (link) => (link.up === true ? "true" : link.up === false ? "false" : "unknown");

  function linkNames(links) {
    const names = Object.keys(links);
    const known = LINK_ORDER.filter((n) => names.includes(n));
    return known.concat(names.filter((n) => !LINK_ORDER.includes(n)).sort());
  }

  // up | down | stale: stale wins (the figures are old), then any link or loop reported down.
  function stateOf(stale, ...groups) {
    if (stale === true) return "stale";
    for (const group of groups) {
      for (const item of Object.values(obj(group))) {
        if (isObj(item) && item.up === false) return "down";
      }
    }
    return "up";
  }

  // ---- pieces --------------------------------------------------------------------------------

  function badge(kind, name, item, nowS) {
    const up = upValue(item);
    const label = up === "true" ? "up" : up === "false" ? `down: ${str(item.reason)}` : "?";
    const since = isNum(item.since) ? `since ${clock(item.since * 1000)}` : null;
    const forText =
      isNum(item.since) && isNum(nowS) ? `for ${duration(nowS - item.since)}` : null;
    const attrs = {
      class: `badge badge-${up === "true" ? "up" : up === "false" ? "down" : "unknown"}`,
      title: [since, forText].filter(Boolean).join(", ") || null,
      "data-up": up,
    };
    attrs[`data-${kind}`] = name;
    return el("span", attrs, label);
  }

  function linksTable(links, nowS) {
    const names = linkNames(links);
    if (names.length === 0) return el("p", { class: "muted small" }, "no link reports");
    const head = el(
      "tr",
      {},
      el("th", {}, "link"),
      el("th", {}, "state"),
      el("th", { class: "num", title: "records read per second" }, "in/s"),
      el("th", { class: "num", title: "copies written per second" }, "out/s"),
      el("th", { class: "num", title: "records refused per second" }, "refused/s"),
      el("th", { class: "num", title: "records not yet read" }, "lag"),
    );
    const rows = names.map((name) => {
      const link = obj(links[name]);
      const refused = isNum(link.refused_per_s) && link.refused_per_s > 0;
      return el(
        "tr",
        { "data-row-link": name },
        el("td", { class: "link-name" }, name),
        el("td", {}, badge("link", name, link, nowS)),
        el("td", { class: "num" }, rate(link.records_in_per_s)),
        el("td", { class: "num" }, rate(link.copies_out_per_s)),
        el("td", { class: refused ? "num note" : "num" }, rate(link.refused_per_s)),
        el("td", { class: "num", "data-lag": name }, count(link.lag)),
      );
    });
    return el("table", { class: "links" }, el("thead", {}, head), el("tbody", {}, ...rows));
  }

  function heartbeat(age, stale) {
    return el(
      "span",
      { class: stale === true ? "age age-stale" : "age", "data-testid": "heartbeat" },
      isNum(age) ? `${duration(age)} ago` : "?",
    );
  }

  function fact(label, ...value) {
    return el("span", { class: "fact" }, el("span", { class: "fact-label" }, label), ...value);
  }

  function stateTag(state) {
    return el("span", { class: `state-tag state-tag-${state}` }, state);
  }

  // One child (and, recursively, its subtree); depth 1 is a direct child.
  function childNode(child, depth, nowS, seen) {
    const c = obj(child);
    const links = obj(c.links);
    const state = stateOf(c.stale, links);
    const region = str(c.region);
    const neverHeard = c.node === null && Object.keys(links).length === 0;
    const facts = el(
      "div",
      { class: "facts" },
      neverHeard
        ? fact("heartbeat", el("span", { class: "age age-stale", "data-testid": "heartbeat" },
            `never heard (${duration(c.heartbeat_age_s)})`))
        : fact("heartbeat", heartbeat(c.heartbeat_age_s, c.stale)),
      fact("hop", hop(c.hop_s)),
      "completeness_gap" in c
        ? fact("gap", el("span", { class: isNum(c.completeness_gap) && c.completeness_gap > 0
            ? "warn" : "" }, count(c.completeness_gap)))
        : null,
    );
    const card = el(
      "div",
      { class: `card card-${state}` },
      el(
        "div",
        { class: "card-head" },
        el("span", { class: "region" }, region),
        el("span", { class: "level" }, str(c.level)),
        stateTag(state),
      ),
      el("div", { class: "node-name" }, str(c.node)),
      facts,
      state === "stale" && !neverHeard
        ? el("p", { class: "muted small", "data-testid": "last-reported" },
            "last reported figures (no heartbeat since)")
        : null,
      el("div", { class: state === "stale" ? "last-known" : "" }, linksTable(links, nowS)),
    );
    const box = el(
      "section",
      { class: `node depth-${Math.min(depth, 3)}`, "data-region": region, "data-state": state },
      card,
    );
    const kids = list(c.children);
    if (kids.length > 0) {
      if (seen.has(c) || depth > 16) {
        box.append(el("p", { class: "muted small" }, "(subtree too deep)"));
      } else {
        seen.add(c);
        box.append(el("div", { class: "subtree" }, ...kids.map((k) => childNode(k, depth + 1, nowS, seen))));
      }
    }
    return box;
  }

  function tally(children, acc, depth) {
    for (const child of list(children)) {
      const c = obj(child);
      acc[stateOf(c.stale, obj(c.links))] += 1;
      if (depth < 16) tally(c.children, acc, depth + 1);
    }
    return acc;
  }

  function parentBox(doc, nowS) {
    const p = doc.parent;
    if (!isObj(p)) {
      return el("div", { class: "root-note muted", "data-testid": "root" }, "root of the cascade: no parent");
    }
    const link = obj(obj(doc.links).parent);
    const state = stateOf(p.stale, { parent: link });
    const region = str(p.region);
    const card = el(
      "div",
      { class: `card card-${state}` },
      el(
        "div",
        { class: "card-head" },
        el("span", { class: "role" }, "parent"),
        el("span", { class: "region" }, region),
        stateTag(state),
      ),
      el(
        "div",
        { class: "facts" },
        fact("heartbeat", heartbeat(p.heartbeat_age_s, p.stale)),
        fact("hop", hop(p.hop_s)),
        fact("link", badge("parent-link", "parent", link, nowS)),
      ),
    );
    return el(
      "section",
      { class: "node parent", "data-testid": "parent", "data-region": region, "data-state": state },
      card,
    );
  }

  function connector(state, label) {
    return el("div", { class: `connector connector-${state}` }, el("span", {}, label));
  }

  function selfBox(doc, nowS) {
    const links = obj(doc.links);
    const loops = obj(doc.loops);
    const state = doc.ready === false ? "down" : stateOf(false, links, loops);
    const region = str(doc.region);
    const loopBadges = Object.keys(loops)
      .sort()
      .map((name) => {
        const loop = obj(loops[name]);
        const retries = isNum(loop.retries) && loop.retries > 0 ? ` (${count(loop.retries)} retries)` : "";
        return el("span", { class: "loop" }, el("span", { class: "loop-name" }, name),
          badge("loop", name, loop, nowS), retries);
      });
    const card = el(
      "div",
      { class: `card card-self card-${state}` },
      el(
        "div",
        { class: "card-head" },
        el("span", { class: "role role-self" }, "this node"),
        el("span", { class: "region" }, region),
        el("span", { class: "level" }, str(doc.level)),
        stateTag(state),
      ),
      el("div", { class: "node-name" }, str(doc.node)),
      linksTable(links, nowS),
      loopBadges.length > 0 ? el("div", { class: "loops" }, fact("loops"), ...loopBadges) : null,
    );
    return el(
      "section",
      { class: "node self", "data-testid": "self", "data-region": region, "data-state": state },
      card,
    );
  }

  function childrenSection(doc, nowS) {
    const children = list(doc.children);
    const totals = tally(children, { up: 0, down: 0, stale: 0 }, 0);
    const all = totals.up + totals.down + totals.stale;
    const summary = el(
      "div",
      { class: "summary", "data-testid": "subtree-summary" },
      `${children.length} ${children.length === 1 ? "child" : "children"}`,
      all !== children.length ? ` · ${all} nodes below` : "",
      " · ",
      el("span", { class: "ok" }, `${totals.up} up`),
      " · ",
      el("span", { class: totals.down ? "bad" : "" }, `${totals.down} down`),
      " · ",
      el("span", { class: totals.stale ? "stale" : "" }, `${totals.stale} stale`),
    );
    const seen = new Set();
    const grid = children.length
      ? el("div", { class: "children", "data-testid": "children" }, ...children.map((c) => childNode(c, 1, nowS, seen)))
      : el("p", { class: "muted" }, "no children (a leaf of the cascade)");
    return el("section", { class: "below" }, el("h2", {}, "Below this node"), summary, grid);
  }

  function refusalsPanel(doc) {
    const refusals = obj(doc.refusals);
    const reasons = Object.keys(refusals).sort((a, b) => {
      const d = (isNum(refusals[b]) ? refusals[b] : 0) - (isNum(refusals[a]) ? refusals[a] : 0);
      return d !== 0 ? d : a.localeCompare(b);
    });
    const total = reasons.reduce((s, r) => s + (isNum(refusals[r]) ? refusals[r] : 0), 0);
    const body = reasons.length
      ? el(
          "table",
          { class: "refusals", "data-testid": "refusals" },
          el("thead", {}, el("tr", {}, el("th", {}, "reason"), el("th", { class: "num" }, "count"))),
          el(
            "tbody",
            {},
            ...reasons.map((r) =>
              el("tr", { "data-reason": r }, el("td", { class: "reason" }, r),
                el("td", { class: "num count" }, count(refusals[r]))),
            ),
          ),
          el("tfoot", {}, el("tr", {}, el("td", {}, "total"), el("td", { class: "num", "data-testid": "refusals-total" }, count(total)))),
        )
      : el("p", { class: "muted", "data-testid": "refusals" }, "no refusals");
    return el("section", { class: "panel" }, el("h2", {}, "Refusals by reason"), body);
  }

  // ---- page ----------------------------------------------------------------------------------

  function render(doc) {
    const nowS = isNum(doc.generated_ms) ? doc.generated_ms / 1000 : Date.now() / 1000;
    const nodeId = str(doc.node);
    document.title = `${nodeId} · cascade`;
    document.getElementById("node-id").textContent = nodeId;
    document.getElementById("node-meta").textContent =
      `region ${str(doc.region)} · level ${str(doc.level)} · version ${str(doc.version)}`;
    const ready = document.getElementById("ready");
    const isReady = doc.ready === true ? "true" : doc.ready === false ? "false" : "unknown";
    ready.dataset.ready = isReady;
    ready.className = `pill pill-${isReady}`;
    ready.textContent = isReady === "true" ? "ready" : isReady === "false" ? "not ready" : "ready: ?";
    document.getElementById("updated").textContent =
      `updated ${clock(isNum(doc.generated_ms) ? doc.generated_ms : Date.now())}`;

    const parentLink = obj(obj(doc.links).parent);
    const tree = el("div", { class: "tree" }, parentBox(doc, nowS));
    if (isObj(doc.parent)) {
      const up = upValue(parentLink);
      tree.append(connector(up === "false" ? "down" : doc.parent.stale === true ? "stale" : "up",
        up === "false" ? `parent link down: ${str(parentLink.reason)}` : "parent link"));
    }
    tree.append(selfBox(doc, nowS), childrenSection(doc, nowS));
    const side = el("aside", { class: "side" }, refusalsPanel(doc));
    document.getElementById("content").replaceChildren(el("div", { class: "layout" }, tree, side));
  }

  function showProblem(what, message) {
    const banner = document.getElementById("banner");
    const since = lastOkMs === null ? "no data yet" : `showing data from ${clock(lastOkMs)}`;
    banner.textContent = `${what}: ${message} — retrying every ${REFRESH_MS / 1000} s (${since})`;
    banner.hidden = false;
    document.body.classList.add("offline");
  }

  function clearProblem() {
    document.getElementById("banner").hidden = true;
    document.body.classList.remove("offline");
  }

  async function fetchDoc() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch("/cascade.json", { cache: "no-store", signal: abort.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
      let doc;
      try {
        doc = await response.json();
      } catch (e) {
        throw new Error(`bad JSON (${e.message})`);
      }
      if (!isObj(doc)) throw new Error("the answer is not a JSON object");
      return doc;
    } catch (e) {
      if (e && e.name === "AbortError") throw new Error(`no answer within ${TIMEOUT_MS / 1000} s`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  async function tick() {
    try {
      let doc;
      try {
        doc = await fetchDoc();
      } catch (e) {
        showProblem("cannot reach node", e && e.message ? e.message : String(e));
        return;
      }
      try {
        render(doc);
      } catch (e) {
        showProblem("cannot show the document", e && e.message ? e.message : String(e));
        return;
      }
      lastOkMs = isNum(doc.generated_ms) ? doc.generated_ms : Date.now();
      clearProblem();
    } finally {
      setTimeout(tick, REFRESH_MS);
    }
  }

  tick();
})();
