// caremesh inbox page: list, filter, live updates (server-sent events), acknowledge/dismiss.
// Plain browser JavaScript; every value is written with textContent, never as HTML.
// Texts come from the page's message catalogue (meta inbox-messages, in the page's language).
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const T = JSON.parse(document.querySelector('meta[name="inbox-messages"]').content);
  const dateFormat = new Intl.DateTimeFormat(T.intl_locale,
    { dateStyle: "medium", timeStyle: "short" });
  const list = document.getElementById("alerts");
  const empty = document.getElementById("empty");
  const count = document.getElementById("count");
  const announce = document.getElementById("announce");
  const connection = document.getElementById("connection");
  const filters = {
    status: document.getElementById("filter-status"),
    pathway: document.getElementById("filter-pathway"),
    severity: document.getElementById("filter-severity"),
  };
  const SEVERITY_ORDER = { critical: 0, high: 1, medium: 2, low: 3 };
  let alerts = new Map(); // id -> alert JSON, the alerts matching the current filters
  let knownPathways = new Set();
  let source = null;

  function current() {
    return {
      status: filters.status.value,
      pathway: filters.pathway.value,
      severity: filters.severity.value,
    };
  }

  function matches(alert) {
    const f = current();
    return (!f.status || alert.status === f.status)
      && (!f.pathway || alert.pathway === f.pathway)
      && (!f.severity || alert.severity === f.severity);
  }

  function say(text) {
    announce.textContent = "";
    window.setTimeout(() => { announce.textContent = text; }, 50);
  }

  function formatTime(iso) {
    const d = new Date(iso);
    return isNaN(d.getTime()) ? iso : dateFormat.format(d);
  }

  // A catalogue text with its {name} placeholders filled.
  function t(key, values) {
    const text = T[key] === undefined ? key : T[key];
    return text.replace(/\{([a-z_]+)\}/g, (m, name) =>
      (values && values[name] !== undefined ? String(values[name]) : m));
  }

  function severityText(severity) {
    return T[`severity_${severity}`] || severity;
  }

  function statusText(status) {
    return T[`status_${status}`] || status;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function field(dl, label, value, valueNode) {
    dl.appendChild(el("dt", {}, label));
    const dd = el("dd");
    if (valueNode) dd.appendChild(valueNode); else dd.textContent = value;
    dl.appendChild(dd);
  }

  function render(alert, isNew) {
    const item = el("li", {
      class: `alert sev-${alert.severity}${isNew ? " is-new" : ""}`,
      "data-alert-id": alert.id,
      "data-status": alert.status,
      "data-severity": alert.severity,
      "aria-labelledby": `title-${alert.id}`,
    });
    const head = el("div", { class: "head" });
    head.appendChild(el("h3", { id: `title-${alert.id}` }, alert.title || alert.rule));
    head.appendChild(el("span", { class: "sev" }, severityText(alert.severity)));
    item.appendChild(head);
    if (alert.text) item.appendChild(el("p", { class: "text" }, alert.text));

    const dl = el("dl");
    field(dl, t("pathway"), alert.pathway);
    field(dl, t("rule"), alert.rule);
    field(dl, t("raised"), null, el("time", { datetime: alert.sent }, formatTime(alert.sent)));
    field(dl, t("status"), statusText(alert.status));
    field(dl, t("patient"), alert.patient);
    item.appendChild(dl);
    item.appendChild(renderContext(alert.context));

    if (alert.status === "open") {
      const act = el("div", { class: "act" });
      const noteId = `note-${alert.id}`;
      act.appendChild(el("label", { for: noteId }, t("note_optional")));
      const note = el("textarea", { id: noteId, name: "note", maxlength: "4000", rows: "2" });
      act.appendChild(note);
      const buttons = el("div", { class: "buttons" });
      const ack = el("button", { type: "button", class: "primary", "data-action": "ack" },
        t("acknowledge"));
      const dismiss = el("button", { type: "button", "data-action": "dismiss" }, t("dismiss"));
      for (const button of [ack, dismiss]) {
        button.setAttribute("aria-describedby", `title-${alert.id}`);
        button.addEventListener("click", () => act_on(alert, button.dataset.action, note,
          [ack, dismiss]));
        buttons.appendChild(button);
      }
      act.appendChild(buttons);
      act.appendChild(el("p", { class: "error", role: "alert" }));
      item.appendChild(act);
    } else if (alert.closed) {
      const key = alert.closed.action === "ack" ? "closed_ack" : "closed_dismiss";
      let text = t(key, { by: alert.closed.by, at: formatTime(alert.closed.at) });
      if (alert.closed.note) text += ` — “${alert.closed.note}”`;
      item.appendChild(el("p", { class: "closed-info" }, text));
    }
    return item;
  }

  // The patient's details, or why they are withheld (the server sends them only when the
  // patient's consent permits care sharing with this organisation).
  function renderContext(context) {
    const box = el("section", { class: "context", "aria-label": t("context_label") });
    if (!context || context.withheld) {
      const reason = context && (context.withheld === "unknown"
        || context.withheld === "unavailable") ? `withheld_${context.withheld}`
        : "withheld_consent";
      box.appendChild(el("p", { class: "withheld" }, t(reason)));
      return box;
    }
    const dl = el("dl");
    if (context.name) field(dl, t("name"), context.name);
    if (context.sex) field(dl, t("sex"), T[`sex_${context.sex}`] || context.sex);
    if (context.age !== null && context.age !== undefined) {
      field(dl, t("age"), t("age_years", { age: context.age }));
    }
    if (context.phone) {
      field(dl, t("phone"), null, el("a", { href: `tel:${context.phone}` }, context.phone));
    }
    if (context.care_team && context.care_team.length) {
      field(dl, t("care_team"), context.care_team.join(", "));
    }
    box.appendChild(dl);
    return box;
  }

  function sorted() {
    return [...alerts.values()].sort((a, b) => (a.sent < b.sent ? 1 : a.sent > b.sent ? -1
      : SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity]));
  }

  function redraw() {
    list.replaceChildren(...sorted().map((a) => render(a, false)));
    updateCount();
  }

  function addPathways(ids) {
    let changed = false;
    for (const id of ids) if (!knownPathways.has(id)) { knownPathways.add(id); changed = true; }
    if (!changed) return;
    const chosen = filters.pathway.value;
    const options = [el("option", { value: "" }, t("all_pathways"))];
    for (const id of [...knownPathways].sort()) options.push(el("option", { value: id }, id));
    filters.pathway.replaceChildren(...options);
    filters.pathway.value = chosen;
  }

  async function load() {
    const f = current();
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) if (v) params.set(k, v);
    const response = await fetch(`/api/alerts?${params}`, { credentials: "same-origin" });
    if (response.status === 401) { window.location.assign("/login"); return; }
    if (!response.ok) { connection.textContent = t("unavailable"); return; }
    const body = await response.json();
    addPathways(body.pathways);
    alerts = new Map(body.alerts.map((a) => [a.id, a]));
    redraw();
  }

  function nodeOf(id) {
    return list.querySelector(`li[data-alert-id="${CSS.escape(id)}"]`);
  }

  function updateCount() {
    empty.hidden = alerts.size > 0;
    count.textContent = `(${alerts.size})`;
  }

  // One alert changed: replace, insert or remove only its item, so that a note being typed
  // in another alert is kept.
  function onAlert(alert) {
    addPathways([alert.pathway]);
    const had = alerts.has(alert.id);
    const existing = nodeOf(alert.id);
    if (matches(alert)) {
      alerts.set(alert.id, alert);
      const node = render(alert, !had);
      if (existing) {
        existing.replaceWith(node);
      } else {
        const after = [...list.children].find((li) => {
          const other = alerts.get(li.dataset.alertId);
          return other && other.sent < alert.sent;
        });
        list.insertBefore(node, after || null);
      }
      if (!had && alert.status === "open") say(t("announce_new", { severity: severityText(alert.severity), title: alert.title }));
    } else if (had) {
      alerts.delete(alert.id);
      if (existing) existing.remove();
    }
    updateCount();
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/api/alerts/stream");
    source.addEventListener("open", () => {
      connection.textContent = t("live");
      connection.className = "badge live";
      load();
    });
    source.addEventListener("alert", (event) => onAlert(JSON.parse(event.data)));
    source.addEventListener("error", () => {
      connection.textContent = t("reconnecting");
      connection.className = "badge down";
      if (source.readyState === EventSource.CLOSED) window.setTimeout(connect, 3000);
    });
  }

  async function act_on(alert, action, note, buttons) {
    const error = note.parentElement.querySelector(".error");
    for (const b of buttons) b.disabled = true;
    error.textContent = "";
    try {
      const response = await fetch(`/api/alerts/${encodeURIComponent(alert.id)}/${action}`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ note: note.value.trim() || null }),
      });
      if (response.status === 401) { window.location.assign("/login"); return; }
      if (response.status === 202) {
        const body = await response.json();
        say(t(action === "ack" ? "announce_ack" : "announce_dismiss", { title: alert.title }));
        onAlert(body.alert);
        return;
      }
      error.textContent = t(response.status === 409 ? "error_already_closed"
        : "error_not_saved");
    } catch (e) {
      error.textContent = t("error_unreachable");
    }
    for (const b of buttons) b.disabled = false;
  }

  for (const select of Object.values(filters)) select.addEventListener("change", load);
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  connect();
})();
