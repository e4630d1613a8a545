// The saga dashboard: polls v1/dashboard (relative, so the page also works
// behind a path prefix) and shows the snapshot. Every figure is an element
// with data-k = its path in the JSON and data-f = how it is shown; the
// browser test reads them back the same way.
"use strict";

(function () {
  const POLL_MS = 2000;
  const STATE_COLORS = {
    in_progress: "#2563eb",
    finished: "#16a34a",
    timed_out: "#d97706",
    voided: "#9333ea",
  };

  const view = {
    charts: {},
    last: null,
    state: "loading",
    polls: 0,
  };
  window.dashboard = view;

  function get(obj, path) {
    return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
  }

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  // How a value is shown, by data-f; null and undefined are "n/a".
  function format(v, f, el) {
    if (v === null || v === undefined) return "n/a";
    switch (f) {
      case "int":
        return intFmt.format(v);
      case "delta":
        return (v > 0 ? "+" : "") + intFmt.format(v);
      case "num": {
        const d = Number(el.dataset.d || 2);
        return Number(v).toLocaleString("en-US", {
          minimumFractionDigits: d,
          maximumFractionDigits: d,
        });
      }
      case "time":
        return String(v).slice(11, 19);
      case "bool":
        return v ? el.dataset.yes || "yes" : el.dataset.no || "no";
      default:
        return String(v);
    }
  }

  function fill(root, data) {
    for (const el of root.querySelectorAll("[data-k]")) {
      const v = get(data, el.dataset.k);
      el.textContent = format(v, el.dataset.f, el);
      el.classList.toggle("na", v === null || v === undefined);
    }
  }

  // A table cell bound to data-k like any other figure.
  function cell(key, f, extra) {
    const td = document.createElement("td");
    td.dataset.k = key;
    td.dataset.f = f;
    if (f === "int" || f === "num") td.className = "n";
    if (extra) Object.assign(td.dataset, extra);
    return td;
  }

  function rows(tbody, items, make) {
    tbody.replaceChildren(
      ...items.map((item, i) => {
        const tr = document.createElement("tr");
        tr.append(...make(item, i));
        return tr;
      })
    );
    if (items.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 9;
      td.className = "empty";
      td.textContent = "none";
      tr.append(td);
      tbody.append(tr);
    }
  }

  function tables(d) {
    rows(document.getElementById("servers"), d.servers, (s, i) => {
      const p = `servers.${i}`;
      const ck = document.createElement("td");
      ck.className = "mono";
      ck.textContent =
        s.checkpoint_file == null ? "n/a" : `${s.checkpoint_file}:${s.checkpoint_pos}`;
      return [
        cell(`${p}.server`, "text"),
        Object.assign(document.createElement("td"), { textContent: s.shards.join(" ") }),
        ck,
        cell(`${p}.last_commit_at`, "time"),
        cell(`${p}.lag_bytes`, "int"),
        cell(`${p}.lag_seconds`, "num", { d: "2" }),
        cell(`${p}.reader_up`, "bool", { yes: "up", no: "down" }),
      ];
    });
    rows(document.getElementById("shards"), d.shards, (s, i) => {
      const p = `shards.${i}`;
      const id = cell(`${p}.last_applied_id`, "text");
      id.classList.add("mono");
      return [
        cell(`${p}.shard`, "int"),
        cell(`${p}.server`, "text"),
        cell(`${p}.lag_entries`, "int"),
        cell(`${p}.lag_seconds`, "num", { d: "2" }),
        cell(`${p}.freshness_seconds`, "num", { d: "3" }),
        cell(`${p}.published_per_second`, "num", { d: "1" }),
        id,
      ];
    });
    rows(document.getElementById("leaderboard"), d.leaderboard.entries, (e, i) => {
      const p = `leaderboard.entries.${i}`;
      return ["rank", "player_id", "points", "wins", "draws", "losses", "forfeits", "matches"].map(
        (k) => cell(`${p}.${k}`, "int")
      );
    });
    rows(document.getElementById("dead-letters"), d.dead_letters.by_reason, (r, i) => {
      const p = `dead_letters.by_reason.${i}`;
      return [cell(`${p}.origin`, "text"), cell(`${p}.kind`, "text"), cell(`${p}.count`, "int")];
    });
  }

  function width(el) {
    return Math.max(280, Math.floor(el.getBoundingClientRect().width));
  }

  function makeChart(id, series, axes, scales) {
    const el = document.getElementById(id);
    const opts = {
      width: width(el),
      height: 190,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: Object.assign({ x: { time: true } }, scales || {}),
      series: [{}].concat(series),
      axes: [{}].concat(axes),
    };
    const empty = [[]].concat(series.map(() => []));
    const chart = new uPlot(opts, empty, el);
    view.charts[id] = chart;
    return chart;
  }

  function charts() {
    if (typeof uPlot !== "function") return;
    makeChart(
      "chart-events",
      [
        { label: "published", stroke: "#2563eb", width: 2 },
        { label: "applied", stroke: "#16a34a", width: 2, dash: [6, 3] },
      ],
      [{ label: "events/s", size: 60 }]
    );
    makeChart(
      "chart-lag",
      [
        { label: "entries", stroke: "#dc2626", width: 2, scale: "n" },
        { label: "seconds (max shard)", stroke: "#7c3aed", width: 2, scale: "s" },
      ],
      [
        { scale: "n", label: "entries", size: 60 },
        { scale: "s", label: "s", side: 1, grid: { show: false }, size: 50 },
      ],
      { n: { auto: true }, s: { auto: true } }
    );
    makeChart(
      "chart-open",
      [
        { label: "open matches", stroke: STATE_COLORS.in_progress, width: 2 },
        { label: "deadlines pending", stroke: "#0891b2", width: 1, dash: [4, 3] },
        { label: "overdue", stroke: "#dc2626", width: 2 },
      ],
      [{ size: 60 }]
    );
    makeChart(
      "chart-results",
      [
        { label: "finished", stroke: STATE_COLORS.finished, width: 2, scale: "f" },
        { label: "timed out", stroke: STATE_COLORS.timed_out, width: 2, scale: "o" },
        { label: "voided", stroke: STATE_COLORS.voided, width: 2, scale: "o" },
      ],
      [
        { scale: "f", label: "finished", size: 60 },
        { scale: "o", label: "timed out · voided", side: 1, grid: { show: false }, size: 60 },
      ],
      { f: { auto: true }, o: { auto: true } }
    );
    window.addEventListener("resize", () => {
      for (const [id, c] of Object.entries(view.charts)) {
        c.setSize({ width: width(document.getElementById(id)), height: 190 });
      }
    });
  }

  function updateCharts(h) {
    const c = view.charts;
    if (!c["chart-events"]) return;
    c["chart-events"].setData([h.t, h.published_per_second, h.applied_per_second]);
    c["chart-lag"].setData([h.t, h.lag_entries, h.lag_seconds]);
    c["chart-open"].setData([h.t, h.in_progress, h.deadlines_pending, h.deadlines_overdue]);
    c["chart-results"].setData([h.t, h.finished, h.timed_out, h.voided]);
  }

  function banner(kind, title, text) {
    const b = document.getElementById("banner");
    b.hidden = !kind;
    b.className = "banner " + (kind || "");
    document.getElementById("banner-title").textContent = title || "";
    document.getElementById("banner-text").textContent = text || "";
  }

  function setState(state, label) {
    view.state = state;
    document.body.className = state;
    const el = document.getElementById("state");
    el.textContent = label;
    el.className = "state " + state;
  }

  function render(d) {
    view.last = d;
    tables(d);
    fill(document, d);
    document.getElementById("dead-incomplete").hidden = d.dead_letters.complete;
    updateCharts(d.history);
    if (d.rebuild.in_progress) {
      setState("rebuild", "rebuild in progress");
      banner(
        "rebuild",
        `Rebuild in progress: generation ${d.rebuild.generation} is being built.`,
        `The API keeps serving generation ${d.generation} until the switch.`
      );
    } else {
      setState("live", "live");
      banner(null);
    }
  }

  async function poll() {
    view.polls += 1;
    try {
      const r = await fetch("v1/dashboard", { cache: "no-store" });
      const body = await r.json().catch(() => null);
      const why = body && body.error ? body.error : `HTTP ${r.status}`;
      if (r.ok && body) {
        render(body);
      } else if (r.status === 503) {
        setState("rebuilding", "rebuilding");
        banner(
          "rebuilding",
          "Rebuilding: the read models are not available.",
          `The API answers 503 until a generation is live again (${why}). Figures below are from the last good sample.`
        );
      } else {
        setState("error", "error");
        banner("error", `The API answered ${r.status}.`, why);
      }
    } catch (e) {
      setState("unreachable", "unreachable");
      banner("error", "The API cannot be reached.", String(e && e.message ? e.message : e));
    }
    setTimeout(poll, POLL_MS);
  }

  charts();
  poll();
})();
