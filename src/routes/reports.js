"use strict";
const $ = (id) => document.getElementById(id);
const message = (text, error) => { $("message").textContent = text; $("message").className = error ? "error" : ""; };
const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; };
const bar = (ratio, over) => {
  const td = document.createElement("td"); td.className = "bar";
  const track = document.createElement("div"); track.className = "track";
  const fill = document.createElement("div"); fill.className = over ? "fill over" : "fill";
  fill.style.width = (Math.max(0, Math.min(1, ratio)) * 100).toFixed(1) + "%";
  track.appendChild(fill); td.appendChild(track); return td;
};
const path = (county, year) => "/v1/reports/" + encodeURIComponent(county) + "/" + encodeURIComponent(year);
const headers = (accept) => ({ "Authorization": "Bearer " + $("key").value.trim(), "Accept": accept });

async function problem(resp) {
  try { const p = await resp.json(); return p.title + (p.detail ? ": " + p.detail : ""); }
  catch (_) { return "HTTP " + resp.status; }
}

// Counties and years from the public policy document (no key needed).
async function loadPolicies() {
  const resp = await fetch("/v1/policies", { headers: { "Accept": "application/json" } });
  if (!resp.ok) { message("The policies could not be read: " + await problem(resp), true); return; }
  const { policies } = await resp.json();
  const county = $("county");
  for (const p of policies) {
    const o = document.createElement("option");
    o.value = p.county; o.textContent = p.county + " · " + p.document.number;
    o.dataset.from = p.period.from.slice(0, 4); o.dataset.to = p.period.to.slice(0, 4);
    county.appendChild(o);
  }
  county.addEventListener("change", fillYears);
  fillYears();
}

function fillYears() {
  const o = $("county").selectedOptions[0]; const year = $("year"); const keep = year.value;
  year.textContent = "";
  for (let y = Number(o.dataset.from); y <= Number(o.dataset.to); y++) {
    const opt = document.createElement("option"); opt.value = opt.textContent = String(y); year.appendChild(opt);
  }
  if ([...year.options].some((x) => x.value === keep)) year.value = keep;
}

// The report on screen (the CSV download is of the same one).
let shown = null;

function render(r) {
  shown = { county: r.county, year: String(r.year) };
  $("title").textContent = r.county + " " + r.year + " · " + r.document;
  $("granted").textContent = r.granted.toLocaleString();
  $("plan").textContent = r.plan_total == null ? "—" : r.plan_total.toLocaleString();
  $("amount").textContent = r.amount;
  $("version").textContent = "Policy version " + r.policy_version + " · plan: " + r.plan_clause;
  const departments = $("departments").tBodies[0]; departments.textContent = "";
  for (const d of r.by_department) {
    const tr = document.createElement("tr");
    tr.appendChild(cell(d.name_zh ? d.name_zh + " (" + d.department + ")" : d.department));
    tr.appendChild(cell(d.granted.toLocaleString(), "num"));
    tr.appendChild(cell(d.plan == null ? "—" : d.plan.toLocaleString(), "num"));
    tr.appendChild(cell(d.plan ? (100 * d.granted / d.plan).toFixed(1) + "%" : "—", "num"));
    tr.appendChild(d.plan ? bar(d.granted / d.plan, d.granted > d.plan) : bar(d.granted ? 1 : 0, false));
    tr.appendChild(cell(d.amount, "num"));
    departments.appendChild(tr);
  }
  const kinds = $("kinds").tBodies[0]; kinds.textContent = "";
  const largest = Math.max(...r.by_kind.map((k) => Number(k.amount)), 0);
  for (const k of r.by_kind) {
    const tr = document.createElement("tr");
    tr.appendChild(cell(k.title_zh + " (" + k.kind + ")"));
    tr.appendChild(cell(k.clause));
    tr.appendChild(cell(k.granted.toLocaleString(), "num"));
    tr.appendChild(bar(largest > 0 ? Number(k.amount) / largest : 0, false));
    tr.appendChild(cell(k.amount, "num"));
    kinds.appendChild(tr);
  }
  $("report").hidden = false;
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("show").disabled = true; message("Loading…");
  try {
    const resp = await fetch(path($("county").value, $("year").value), { headers: headers("application/json") });
    if (!resp.ok) { $("report").hidden = true; $("csv").disabled = true; shown = null; message(await problem(resp), true); return; }
    render(await resp.json());
    $("csv").disabled = false;
    message("Granted against plan, from the running totals kept with every decision (revoked and rejected claims excluded).");
  } catch (err) {
    message("The service could not be reached: " + err, true);
  } finally {
    $("show").disabled = false;
  }
});

$("csv").addEventListener("click", async () => {
  if (!shown) return;
  const resp = await fetch(path(shown.county, shown.year), { headers: headers("text/csv") });
  if (!resp.ok) { message(await problem(resp), true); return; }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url; a.download = "report-" + shown.county + "-" + shown.year + ".csv";
  document.body.appendChild(a); a.click(); a.remove();
  // Some browsers read the object after the click returns.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
});

loadPolicies().catch((err) => message("The service could not be reached: " + err, true));
