/// The console's one page: HTML, CSS and JavaScript in the binary (no CDN, no build step). It routes by the
/// URL's fragment (`#/live`, `#/events/ID`, `#/calls/ID`, `#/deliveries`, `#/rejected`, `#/rules`, `#/try`,
/// `#/health`) and reads `/console/api/…`. A `?token=` given to `/console` is kept for the tab's session and
/// sent with every call; Basic credentials are the browser's own. `?theme=light|dark` fixes the theme (else
/// the system's, or the toggle's last choice).
enum ConsolePage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Switchboard console</title>
        <link rel="icon" href="data:,">
        <style>
        :root { color-scheme: light; --bg:#f7f7f5; --panel:#fff; --fg:#1d232a; --muted:#5f6b76; --line:#d9dde1;
          --accent:#1f6feb; --ok:#1a7f37; --okbg:#dcf5e3; --err:#c62828; --errbg:#fde3e3; --warn:#8a5a00;
          --warnbg:#fff1cc; --skip:#5f6b76; --skipbg:#eceff1; --code:#f0f2f4; }
        :root[data-theme=dark] { color-scheme: dark; --bg:#101418; --panel:#171c22; --fg:#e6e9ec; --muted:#9aa6b2;
          --line:#2c343d; --accent:#58a6ff; --ok:#56d364; --okbg:#12301c; --err:#ff7b72; --errbg:#3b1618;
          --warn:#e3b341; --warnbg:#3a2d0b; --skip:#9aa6b2; --skipbg:#232a32; --code:#0c1014; }
        * { box-sizing: border-box; }
        body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
        header { display:flex; flex-wrap:wrap; align-items:center; gap:4px 14px; padding:8px 16px; background:var(--panel);
          border-bottom:1px solid var(--line); position:sticky; top:0; z-index:2; }
        header strong { font-size:16px; margin-right:8px; }
        nav { display:flex; flex-wrap:wrap; gap:2px; }
        nav a { padding:6px 10px; border-radius:6px; color:var(--fg); text-decoration:none; }
        nav a.active { background:var(--accent); color:#fff; }
        #theme { margin-left:auto; }
        main { padding:16px; max-width:1400px; margin:0 auto; }
        h1 { font-size:20px; margin:4px 0 12px; } h2 { font-size:16px; margin:20px 0 8px; }
        a { color:var(--accent); }
        .panel { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px; margin-bottom:12px; }
        .scroll { overflow-x:auto; }
        table { border-collapse:collapse; width:100%; }
        th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
        th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
        td.mono, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; word-break:break-all; }
        pre { background:var(--code); border:1px solid var(--line); border-radius:6px; padding:8px; overflow:auto; max-height:420px;
          font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space:pre-wrap; word-break:break-word; }
        .badge { display:inline-block; padding:1px 7px; margin:1px 2px; border-radius:10px; font-size:12px; white-space:nowrap; }
        .ok, .done { color:var(--ok); background:var(--okbg); } .error, .dead { color:var(--err); background:var(--errbg); }
        .dropped, .failed, .pending, .running { color:var(--warn); background:var(--warnbg); }
        .skipped, .delivered-muted { color:var(--skip); background:var(--skipbg); } .delivered { color:var(--ok); background:var(--okbg); }
        .muted { color:var(--muted); }
        .toolbar { display:flex; flex-wrap:wrap; gap:8px; align-items:center; margin-bottom:10px; }
        input, select, textarea, button { font:inherit; color:var(--fg); background:var(--panel); border:1px solid var(--line);
          border-radius:6px; padding:5px 8px; }
        input { min-width:0; width:150px; } select { max-width:100%; min-width:0; }
        button { cursor:pointer; background:var(--accent); color:#fff; border-color:var(--accent); }
        button.plain { background:var(--panel); color:var(--fg); border-color:var(--line); }
        textarea { width:100%; min-height:220px; font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
        .rule { border:1px solid var(--line); border-radius:8px; padding:10px; margin:8px 0; background:var(--panel); }
        .rule h3 { margin:0 0 6px; font-size:15px; display:flex; flex-wrap:wrap; gap:6px; align-items:center; }
        .kv { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; }
        .kv div:nth-child(odd) { color:var(--muted); }
        .grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(300px, 1fr)); gap:12px; }
        .chart svg { width:100%; height:110px; }
        .chart .bar { fill:var(--accent); } .chart .bar.err { fill:var(--err); } .chart .line { stroke:var(--warn); fill:none; stroke-width:1.5; }
        .error-text { color:var(--err); }
        .notice { padding:8px 12px; border-radius:6px; margin-bottom:10px; }
        #status { font-size:12px; }
        .nowrap { white-space:nowrap; } .narrow-only { display:none; }
        @media (max-width: 700px) { main { padding:8px; } input { width:110px; } th, td { padding:5px; }
          .hide-narrow { display:none; } .narrow-only { display:block; font-size:12px; } .badge { white-space:normal; } header { padding:6px 8px; } }
        </style>
        </head>
        <body>
        <header>
          <strong>Switchboard</strong>
          <nav id="nav">
            <a href="#/live" data-page="live">Live</a><a href="#/deliveries" data-page="deliveries">Deliveries</a>
            <a href="#/rejected" data-page="rejected">Rejected</a><a href="#/rules" data-page="rules">Rules</a>
            <a href="#/try" data-page="try">Try it</a><a href="#/health" data-page="health">Health</a>
          </nav>
          <span id="status" class="muted"></span>
          <button id="theme" class="plain" title="Light, dark or the system's">Theme</button>
        </header>
        <main id="main"></main>
        <script>
        "use strict";
        const params = new URLSearchParams(location.search);
        if (params.get("token")) sessionStorage.setItem("switchboard-token", params.get("token"));
        const token = sessionStorage.getItem("switchboard-token");
        const themeOrder = ["auto", "light", "dark"];
        let theme = params.get("theme") || localStorage.getItem("switchboard-theme") || "auto";
        function applyTheme() {
          const dark = theme === "dark" || (theme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
          document.documentElement.dataset.theme = dark ? "dark" : "light";
          document.getElementById("theme").textContent = "Theme: " + theme;
        }
        document.getElementById("theme").onclick = () => {
          theme = themeOrder[(themeOrder.indexOf(theme) + 1) % 3]; localStorage.setItem("switchboard-theme", theme); applyTheme();
        };
        applyTheme();

        function withToken(path) {
          if (!token) return path;
          return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
        }
        async function api(path, options) {
          options = Object.assign({}, options);
          options.headers = Object.assign({ "X-Switchboard-Console": "1" }, options.headers || {});
          const response = await fetch(withToken("/console/api/" + path), options);
          const text = await response.text();
          let body; try { body = JSON.parse(text); } catch (e) { body = { error: text }; }
          if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
          return body;
        }
        const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
        const time = (t) => t ? new Date(t * 1000).toLocaleTimeString([], { hour12: false }) : "";
        const dateTime = (t) => t ? new Date(t * 1000).toLocaleString([], { hour12: false }) : "";
        const ms = (s) => s == null ? "–" : (s < 0.001 ? (s * 1e6).toFixed(0) + " µs" : s < 1 ? (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms" : s.toFixed(2) + " s");
        const main = document.getElementById("main");
        const status = (text) => { document.getElementById("status").textContent = text; };
        let leave = null;  // what the current page does when another is opened (close its stream)
        // Counts the pages opened: an answer or a timer that comes back after another page was opened must not
        // draw over it (a redelivery's reload 800 ms later did, over the Try it page).
        let view = 0;
        // The page's data from the API, or null when it failed (the error shown) or another page was opened
        // while it loaded (nothing shown).
        async function load(path) {
          const mine = view;
          try { const r = await api(path); return mine === view ? r : null; }
          catch (err) { if (mine === view) failure(err); return null; }
        }
        // fn after ms, unless another page was opened since `mine` (by default: now).
        function later(fn, ms, mine = view) { setTimeout(() => { if (mine === view) fn(); }, ms); }

        function badge(r) {
          const stage = r.outcome === "skipped" || r.outcome === "error" ? (r.stage ? " at " + r.stage : "") : "";
          return `<span class="badge ${esc(r.outcome)}" title="${esc(r.rule)}: ${esc(r.outcome)}${esc(stage)} ${ms(r.seconds)}">${esc(r.rule)} · ${esc(r.outcome)}${esc(stage)}</span>`;
        }
        const eventLink = (id, text) => id ? `<a href="#/events/${encodeURIComponent(id)}">${esc(text)}</a>` : esc(text);
        const callLink = (id) => id ? `<a class="mono" href="#/calls/${encodeURIComponent(id)}">${esc(id)}</a>` : "";
        function failure(e) { main.innerHTML = `<div class="notice error">${esc(e.message)}</div>`; }

        // Live --------------------------------------------------------------------------------------------
        const live = { rows: [], paused: false, held: [], seen: new Set(), source: null };
        function liveMatches(e, f) {
          if (f.name && !(e.kind + "." + e.name).includes(f.name)) return false;
          if (f.call && !(e.call_id || "").includes(f.call)) return false;
          if (f.account && !(e.account_id || "").includes(f.account)) return false;
          if (f.rule && !(e.rules || []).some((r) => r.rule.includes(f.rule))) return false;
          if (f.outcome && !(e.rules || []).some((r) => r.outcome === f.outcome)) return false;
          return true;
        }
        function liveFilters() {
          const v = (id) => (document.getElementById(id)?.value || "").trim();
          return { name: v("f-name"), call: v("f-call"), account: v("f-account"), rule: v("f-rule"), outcome: v("f-outcome") };
        }
        function renderLiveRows() {
          const body = document.getElementById("live-rows"); if (!body) return;
          const f = liveFilters();
          const rows = live.rows.filter((e) => liveMatches(e, f)).slice(0, 300);
          body.innerHTML = rows.map((e) => `<tr data-event="${esc(e.id)}"><td class="mono nowrap">${time(e.at)}</td>
            <td>${eventLink(e.id, (e.kind ? e.kind + "." : "") + (e.name || "?"))}<div class="narrow-only">${callLink(e.call_id)}</div></td>
            <td class="hide-narrow">${callLink(e.call_id)}</td>
            <td class="mono hide-narrow">${esc(e.account_id)}</td><td class="hide-narrow">${esc(e.hook)}</td>
            <td>${(e.rules || []).map(badge).join("") || '<span class="muted">no rule matched</span>'}</td></tr>`).join("")
            || `<tr><td colspan="6" class="muted">No events yet. Send one: curl -H 'Content-Type: application/json' --data-binary @samples/channel_create__inbound.json ${esc(location.origin)}/hooks/channel_create</td></tr>`;
          document.getElementById("held").textContent = live.paused ? `paused: ${live.held.length} new` : "";
        }
        function addLive(events, front) {
          for (const e of events) {
            const key = e.id || ("seq" + e.seq);
            if (live.seen.has(key)) continue;
            live.seen.add(key);
            if (front) live.rows.unshift(e); else live.rows.push(e);
          }
          if (live.rows.length > 1000) live.rows.length = 1000;
        }
        async function pageLive() {
          main.innerHTML = `<h1>Live</h1><div class="toolbar">
            <input id="f-name" placeholder="event name"><input id="f-call" placeholder="call_id"><input id="f-account" placeholder="account">
            <input id="f-rule" placeholder="rule"><select id="f-outcome"><option value="">any outcome</option><option>ok</option>
            <option>skipped</option><option>dropped</option><option>error</option></select>
            <button id="pause">Pause</button><span id="held" class="muted"></span></div>
            <div class="panel scroll"><table><thead><tr><th>Time</th><th>Event</th><th class="hide-narrow">Call</th><th class="hide-narrow">Account</th>
            <th class="hide-narrow">Hook</th><th>Rules</th></tr></thead><tbody id="live-rows"></tbody></table></div>`;
          for (const id of ["f-name", "f-call", "f-account", "f-rule", "f-outcome"]) document.getElementById(id).oninput = renderLiveRows;
          document.getElementById("pause").onclick = (ev) => {
            live.paused = !live.paused; ev.target.textContent = live.paused ? "Resume" : "Pause";
            if (!live.paused) { addLive(live.held.reverse(), true); live.held = []; }
            renderLiveRows();
          };
          live.rows = []; live.seen = new Set(); live.held = [];
          let after = 0;
          const mine = view;
          try {
            const tail = await api("live?after=0");
            after = tail.latest;
            const history = await api("events?limit=100").catch(() => ({ events: [] }));
            addLive(tail.events.slice().reverse(), false);
            addLive(history.events, false);
            live.rows.sort((a, b) => b.at - a.at);
          } catch (e) { if (mine === view) failure(e); return; }
          if (mine !== view) return;  // another page opened meanwhile: no stream for this one
          renderLiveRows();
          const source = new EventSource(withToken("/console/api/stream?after=" + after));
          source.onopen = () => status("live");
          source.onerror = () => status("reconnecting…");
          source.onmessage = (message) => {
            const batch = JSON.parse(message.data);
            const fresh = batch.events.slice().reverse();
            if (live.paused) live.held = fresh.concat(live.held); else addLive(fresh, true);
            if (batch.missed > 0) status(`live (${batch.missed} skipped in a burst)`);
            renderLiveRows();
          };
          leave = () => { source.close(); status(""); };
        }

        // Event -------------------------------------------------------------------------------------------
        function renderRules(rules) {
          if (!rules || !rules.length) return `<p class="muted">No rule matched this event.</p>`;
          return rules.map((r) => {
            const err = r.error ? `<div class="error-text"><strong>${esc(r.error.file || r.file)}:${esc(r.error.line ?? "?")}</strong> ${esc(r.error.message)}</div>
              ${r.error.traceback ? `<pre>${esc(r.error.traceback)}</pre>` : ""}` : "";
            const logs = (r.logs || []).length ? `<h4>Log</h4><pre class="logs">${r.logs.map((l) => `[${esc(l.level)}] ${esc(l.message)}${l.fields && Object.keys(l.fields).length ? " " + esc(JSON.stringify(l.fields)) : ""}`).join("\n")}</pre>` : "";
            const http = (r.http || []).length ? `<h4>HTTP calls</h4><div class="scroll"><table><tr><th>Method</th><th>URL</th><th>Status</th><th>Latency</th></tr>
              ${r.http.map((h) => `<tr><td>${esc(h.method)}</td><td class="mono">${esc(h.url)}</td><td>${h.status ?? `<span class="error-text">${esc(h.error)}</span>`}</td><td>${ms(h.seconds)}</td></tr>`).join("")}</table></div>` : "";
            const fwd = (r.forwards || []).length ? `<h4>Forwards</h4><ul>${r.forwards.map((f) => `<li class="mono">${esc(f.method)} ${esc(f.url)} (${esc(f.format)})</li>`).join("")}</ul>` : "";
            return `<div class="rule" data-rule="${esc(r.rule)}"><h3>${esc(r.rule)} ${badge(r)} <span class="muted">${esc(r.file)} · ${ms(r.seconds)}</span></h3>${err}${logs}${http}${fwd}</div>`;
          }).join("");
        }
        function renderDeliveries(list, withEvent) {
          if (!list.length) return `<p class="muted">None.</p>`;
          return `<div class="scroll"><table><thead><tr><th>Id</th><th>Rule</th><th>Target</th><th>State</th><th>Attempts</th><th>Last</th>${withEvent ? "<th>Event</th>" : ""}<th></th></tr></thead><tbody>` +
            list.map((d) => `<tr data-delivery="${d.id}"><td>${d.id}</td><td>${esc(d.rule)}</td><td class="mono">${esc(d.method)} ${esc(d.url)}</td>
              <td><span class="badge ${esc(d.state)}">${esc(d.state)}</span></td><td>${d.attempts}</td>
              <td>${d.last_status ?? ""} <span class="muted">${esc(d.last_error)}</span></td>
              ${withEvent ? `<td>${eventLink(d.event_id, d.event_id.slice(0, 8))}</td>` : ""}
              <td>${d.state === "dead" || d.state === "delivered" ? `<button class="redeliver" data-id="${d.id}">Redeliver</button>` : ""}</td></tr>
              <tr><td></td><td colspan="${withEvent ? 7 : 6}"><details><summary class="muted">${d.attempt_log.length} attempt(s)</summary>
              <table>${d.attempt_log.map((a) => `<tr><td>#${a.number}</td><td>${dateTime(a.at)}</td><td>${a.status ?? ""}</td><td>${a.latency_ms.toFixed(1)} ms</td><td class="mono">${esc(a.error || a.excerpt)}</td></tr>`).join("")}</table></details></td></tr>`).join("") +
            `</tbody></table></div>`;
        }
        function wireRedeliver(reload) {
          for (const b of main.querySelectorAll("button.redeliver")) b.onclick = async () => {
            const mine = view;
            b.disabled = true;
            try { await api(`deliveries/${b.dataset.id}/redeliver`, { method: "POST" }); status(`delivery ${b.dataset.id} queued again`); }
            catch (e) { status(e.message); }
            later(reload, 800, mine);
          };
        }
        function fieldsTable(fields) {
          if (!fields) return `<p class="muted">Not decoded.</p>`;
          const rows = Object.keys(fields).sort().map((k) => {
            const v = fields[k]; const type = v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
            return `<tr><td class="mono">${esc(k)}</td><td class="muted">${type}</td><td class="mono">${esc(typeof v === "object" ? JSON.stringify(v) : v)}</td></tr>`;
          }).join("");
          return `<div class="scroll"><table class="fields"><tr><th>Field</th><th>Type</th><th>Value</th></tr>${rows}</table></div>`;
        }
        async function pageEvent(id) {
          const e = await load("events/" + encodeURIComponent(id)); if (!e) return;
          main.innerHTML = `<h1>${esc((e.kind ? e.kind + "." : "") + (e.name || "event"))} <span class="badge ${e.state}">${e.state}</span></h1>
            <div class="panel kv"><div>Id</div><div class="mono">${esc(e.id)}</div><div>Received</div><div>${dateTime(e.at)}</div>
            <div>Hook</div><div>${esc(e.hook || "–")} ${e.hook_id ? `<span class="muted">(Kazoo hook ${esc(e.hook_id)})</span>` : ""}</div>
            <div>Call</div><div>${callLink(e.call_id) || "–"} ${e.other_leg ? `· other leg ${callLink(e.other_leg)}` : ""}</div>
            <div>Account</div><div class="mono">${esc(e.account_id || "–")}</div><div>Format</div><div>${esc(e.format)}</div></div>
            <h2>Rules</h2>${e.state === "done" ? renderRules(e.rules) : `<p class="muted">The rules have not finished yet.</p>`}
            <h2>Forwards and their delivery</h2><div class="panel">${renderDeliveries(e.deliveries, false)}</div>
            <h2>Fields, as rules see them</h2><div class="panel">${e.decode_error ? `<p class="error-text">${esc(e.decode_error)}</p>` : fieldsTable(e.fields)}</div>
            <h2>Raw body</h2><pre>${esc(e.body ?? ("base64: " + e.body_base64))}</pre>
            <h2>Meta</h2><pre>${esc(JSON.stringify(e.meta, null, 2))}</pre>`;
          wireRedeliver(() => pageEvent(id));
        }

        // Call --------------------------------------------------------------------------------------------
        async function pageCall(id) {
          const c = await load("calls/" + encodeURIComponent(id)); if (!c) return;
          const start = c.events.length ? c.events[0].at : 0;
          main.innerHTML = `<h1>Call <span class="mono">${esc(id)}</span></h1>
            <p class="muted">Legs: ${c.legs.map(callLink).join(", ")}</p>
            <div class="panel scroll"><table><thead><tr><th>Time</th><th>+s</th><th>Event</th><th>Leg</th><th>Rules</th></tr></thead><tbody>
            ${c.events.map((e) => `<tr><td class="mono nowrap">${time(e.at)}</td><td>${(e.at - start).toFixed(1)}</td>
              <td>${eventLink(e.id, (e.kind ? e.kind + "." : "") + (e.name || "?"))}</td><td class="mono">${esc((e.call_id || "").slice(0, 12))}</td>
              <td>${(e.rules || []).map(badge).join("")}</td></tr>`).join("") || `<tr><td colspan="5" class="muted">No kept events for this call.</td></tr>`}
            </tbody></table></div>`;
        }

        // Deliveries --------------------------------------------------------------------------------------
        async function pageDeliveries(state) {
          state = state || "all";
          const d = await load("deliveries?state=" + state); if (!d) return;
          const tabs = ["all", "pending", "failed", "dead", "delivered"].map((s) =>
            `<a href="#/deliveries/${s}" class="badge ${s === state ? "ok" : "skipped"}">${s} ${d.counts[s] ?? ""}</a>`).join("");
          main.innerHTML = `<h1>Deliveries</h1><div class="toolbar">${tabs}
            <button id="redeliver-dead" ${d.counts.dead ? "" : "disabled"}>Redeliver all dead (${d.counts.dead || 0})</button></div>
            <div class="panel">${renderDeliveries(d.deliveries, true)}</div>`;
          document.getElementById("redeliver-dead").onclick = async () => {
            const mine = view;
            try { const r = await api("deliveries/redeliver-dead", { method: "POST" }); status(`${r.queued.length} queued again`); }
            catch (e) { status(e.message); }
            later(() => pageDeliveries(state), 800, mine);
          };
          wireRedeliver(() => pageDeliveries(state));
        }

        // Rejected ----------------------------------------------------------------------------------------
        async function pageRejected() {
          const r = await load("rejected"); if (!r) return;
          main.innerHTML = `<h1>Rejected requests</h1><p class="muted">Requests answered 4xx, newest first, kept in the data directory (secrets redacted).</p>
            <div class="panel scroll"><table><thead><tr><th>Time</th><th>Code</th><th>Reason</th><th>Request</th><th>Body</th></tr></thead><tbody>
            ${r.rejected.map((x) => `<tr><td class="mono">${dateTime(x.received_at)}</td><td><span class="badge error">${esc(x.code)}</span></td>
              <td>${esc(x.reason)}</td><td class="mono">${esc(x.method)} ${esc(x.path)}<br><span class="muted">${esc(x.peer)}</span></td>
              <td><details><summary>${x.body_bytes} bytes</summary><pre>${esc(x.body)}</pre><pre>${esc(JSON.stringify(x.headers, null, 1))}</pre></details></td></tr>`).join("")
              || `<tr><td colspan="5" class="muted">Nothing rejected.</td></tr>`}
            </tbody></table></div>`;
        }

        // Rules -------------------------------------------------------------------------------------------
        async function pageRules() {
          const r = await load("rules"); if (!r) return;
          const last = r.last_reload;
          main.innerHTML = `<h1>Rules <span class="muted">version ${r.version}</span></h1>
            <div class="toolbar"><button id="reload">Reload rules</button><span class="muted">from ${esc(r.directory)}</span>
            ${last ? `<span class="badge ${last.ok ? "ok" : "error"}">last reload ${last.ok ? "ok" : "rejected"} at ${time(last.at)}</span>` : ""}</div>
            ${last && last.errors.length ? `<pre class="error-text">${esc(last.errors.join("\n"))}</pre>` : ""}
            ${r.diagnostics.length ? `<pre>${esc(r.diagnostics.join("\n"))}</pre>` : ""}
            <div class="panel scroll"><table><thead><tr><th>Rule</th><th>File</th><th>On</th><th>Runs (1 h)</th><th>Errors</th><th>p50</th><th>p99</th></tr></thead><tbody>
            ${r.rules.map((x) => `<tr><td><strong>${esc(x.name)}</strong>${x.schedule ? `<br><span class="muted">${esc(x.schedule)}</span>` : ""}</td>
              <td class="mono">${esc(x.file)}</td><td class="mono">${esc(x.on.join(", "))}</td><td>${x.last_hour.runs}</td>
              <td>${x.last_hour.errors ? `<span class="badge error">${x.last_hour.errors}</span>` : 0}</td><td>${ms(x.last_hour.p50)}</td><td>${ms(x.last_hour.p99)}</td></tr>`).join("")}
            </tbody></table></div>
            <h2>Last errors</h2><div class="panel scroll"><table><tbody>
            ${r.recent_errors.map((x) => `<tr><td class="mono nowrap">${time(x.at)}</td><td>${esc(x.rule)}</td><td class="mono">${esc(x.where)}</td>
              <td>${esc(x.message)}</td><td>${eventLink(x.event_id, x.event)}</td></tr>`).join("") || `<tr><td class="muted">No errors in this process's life.</td></tr>`}
            </tbody></table></div>`;
          document.getElementById("reload").onclick = async () => {
            const mine = view;
            const response = await fetch(withToken("/console/api/reload"), { method: "POST", headers: { "X-Switchboard-Console": "1" } });
            const body = await response.json();
            status(body.ok ? (body.changed ? `reloaded: version ${body.version}` : "no change") : "reload rejected: " + body.errors.join("; "));
            if (mine === view) pageRules();
          };
        }

        // Try it ------------------------------------------------------------------------------------------
        async function pageTry() {
          main.innerHTML = `<h1>Try it</h1><p class="muted">A dry run through the running rules: nothing is journaled, sent or stored.</p>
            <div class="toolbar"><select id="sample"><option value="">pick a sample…</option></select>
            <select id="format"><option>auto</option><option>json</option><option>form</option><option>query</option></select>
            <input id="hook" placeholder="hook (optional)"><button id="run">Run</button></div>
            <textarea id="body" placeholder="Paste a webhook body: JSON, form (Kazoo's bracket encoding) or a GET query"></textarea>
            <div id="result"></div>`;
          const select = document.getElementById("sample");
          api("samples").then((s) => { for (const n of s.samples) select.add(new Option(n, n)); }).catch(() => {});
          select.onchange = async () => {
            if (!select.value) return;
            const s = await api("samples/" + encodeURIComponent(select.value));
            document.getElementById("body").value = s.body; document.getElementById("format").value = s.format;
          };
          document.getElementById("run").onclick = async () => {
            const out = document.getElementById("result");
            try {
              const r = await api("try", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({
                body: document.getElementById("body").value, format: document.getElementById("format").value, hook: document.getElementById("hook").value }) });
              out.innerHTML = `<h2>${esc(r.kind)}.${esc(r.name)} <span class="muted">(${esc(r.format)}; ${r.not_matching} rule(s) did not match)</span></h2>
                ${renderRules(r.rules)}<h2>Fields, as rules see them</h2><div class="panel">${fieldsTable(r.fields)}</div>`;
            } catch (e) { out.innerHTML = `<div class="notice error">${esc(e.message)}</div>`; }
          };
        }

        // Health ------------------------------------------------------------------------------------------
        function chart(title, minutes, key, cls, line) {
          const w = 600, h = 100, n = minutes.length, bw = w / n;
          const values = minutes.map((m) => m[key] || 0);
          const top = Math.max(1e-9, ...values, ...(line ? minutes.map((m) => m[line] || 0) : []));
          const bars = values.map((v, i) => `<rect class="bar ${cls}" x="${i * bw + 0.5}" y="${h - v / top * h}" width="${bw - 1}" height="${v / top * h}"></rect>`).join("");
          const path = line ? `<polyline class="line" points="${minutes.map((m, i) => `${i * bw + bw / 2},${h - (m[line] || 0) / top * h}`).join(" ")}"></polyline>` : "";
          const fmt = key === "p50" ? ms : (v) => (v / 60).toFixed(2) + "/s";
          return `<div class="panel chart"><strong>${title}</strong> <span class="muted">last minute ${fmt(values[n - 1])} · peak ${fmt(Math.max(...values))}</span>
            <svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}">${bars}${path}</svg>
            <div class="muted" style="display:flex;justify-content:space-between"><span>−60 min</span><span>now</span></div></div>`;
        }
        async function pageHealth() {
          const r = await load("health"); if (!r) return;
          main.innerHTML = `<h1>Health</h1><div class="grid">${chart("Events/s", r.minutes, "events", "")}
            ${chart("Events with a rule error/s", r.minutes, "errors", "err")}${chart("Rule duration p50 (bars), p99 (line)", r.minutes, "p50", "", "p99")}</div>
            <h2>Kazoo hooks answered non-200 in the last 60 s</h2><div class="panel scroll"><table><tbody>
            ${r.hooks.map((x) => `<tr><td class="mono">${esc(x.hook_id)}</td><td>${x.failures_last_60s}</td><td>${x.warning ? `<span class="badge error">${esc(x.warning)}</span>` : ""}</td></tr>`).join("")
              || `<tr><td class="muted">None: every Kazoo hook got 200s.</td></tr>`}</tbody></table></div>
            <h2>Deliveries</h2><div class="panel">${Object.entries(r.deliveries).map(([k, v]) => `<span class="badge ${esc(k)}">${esc(k)} ${v}</span>`).join("") || '<span class="muted">journal off</span>'}</div>
            <h2>Nodes</h2><div class="panel scroll"><table><tr><th>Node</th><th>State</th><th>Rules</th><th>In flight</th><th>Spooled</th></tr>
            ${r.nodes.map((x) => `<tr><td class="mono">${esc(x.name)}</td><td>${esc(x.state || (!x.live ? "gone" : x.processing ? "processing" : "accepting"))}</td><td class="mono">${esc(x.rules_hash || "version " + x.rules_version)}</td><td>${x.events_in_flight}</td><td>${x.spooled ?? (x.journal ? "journal on" : "journal off")}</td></tr>`).join("")}</table></div>`;
        }

        // Routing -----------------------------------------------------------------------------------------
        async function route() {
          if (leave) { leave(); leave = null; }
          view++;
          const [page, arg] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
          for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === (page || "live"));
          main.dataset.page = page || "live";
          switch (page) {
            case "events": return pageEvent(arg);
            case "calls": return pageCall(arg);
            case "deliveries": return pageDeliveries(arg);
            case "rejected": return pageRejected();
            case "rules": return pageRules();
            case "try": return pageTry();
            case "health": return pageHealth();
            default: return pageLive();
          }
        }
        addEventListener("hashchange", route);
        route();
        </script>
        </body>
        </html>
        """#
}
