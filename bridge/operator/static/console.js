// The live console: calls pushed by Server-Sent Events (no polling), past calls from
// the store, and each call's recording drawn as a waveform.
import { drawWaveform } from "./waveform.js";

const $ = (id) => document.getElementById(id);
const debug = {
  live: [], events: [], opened: null, waveform: null, detailEvents: 0, latency: null,
};
window.consoleDebug = debug;

const live = new Map();
let detailStream = null;
let detailId = null;
let detailLines = new Map(); // seq -> transcript element: a restated line replaces its own

// A cascade turn's latency breakdown, in pipeline order: [key, label].
const SPANS = [
  ["speech_stopped_to_transcript", "transcript"],
  ["transcript_to_first_token", "1st LLM token"],
  ["first_token_to_first_tts_audio", "1st TTS audio"],
  ["first_tts_audio_to_first_audio_out", "1st audio to Twilio"],
  ["speech_stopped_to_first_audio_out", "turn"],
  ["response_started_to_first_audio_out", "from request"],
];
const ms = (v) => (v == null ? "–" : `${v} ms`);

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "–" : String(text);
  row.append(td);
  return td;
}

function short(id) { return id && id.length > 14 ? id.slice(0, 14) + "…" : id; }

function renderLive() {
  const body = $("live");
  body.replaceChildren();
  for (const call of live.values()) {
    const row = document.createElement("tr");
    row.className = "pick";
    row.dataset.callId = call.call_id;
    cell(row, short(call.call_id)).title = call.call_id;
    cell(row, call.leg);
    cell(row, call.caller);
    cell(row, call.agent);
    cell(row, `${Math.round(Date.now() / 1000 - call.started_at)} s`);
    cell(row, call.state);
    row.addEventListener("click", () => openCall(call.call_id, true));
    body.append(row);
  }
  $("no-live").hidden = live.size > 0;
  debug.live = [...live.keys()];
}

function watchCalls() {
  const source = new EventSource("/console/events");
  source.onopen = () => { $("stream-state").textContent = "live"; };
  source.onerror = () => { $("stream-state").textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    debug.events.push(event.type);
    if (event.type === "snapshot") {
      live.clear();
      for (const call of event.calls) live.set(call.call_id, call);
    } else if (event.type === "call_started") {
      live.set(event.call_id, event.call);
    } else if (event.type === "call_ended") {
      live.delete(event.call_id);
      searchPast();
    } else if (event.type === "call_updated") {
      if (live.has(event.call_id)) live.set(event.call_id, event.call);
      else searchPast();
      if (event.call_id === detailId && event.call.recording) loadRecorded(detailId);
    }
    renderLive();
  };
  setInterval(renderLive, 1000); // durations tick locally; no request is made
}

// --------------------------------------------------------------- one call

function resetDetail(callId, state) {
  if (detailStream) { detailStream.close(); detailStream = null; }
  detailId = callId;
  debug.opened = callId;
  $("detail").hidden = false;
  $("detail-title").textContent = `Call ${callId}`;
  $("detail-state").textContent = state;
  $("detail-transcript").replaceChildren();
  $("detail-timeline").replaceChildren();
  detailLines = new Map();
  $("latency").hidden = true;
  $("latency-rows").replaceChildren();
  $("recording").hidden = true;
  $("tape-link").hidden = true;
  $("usage").textContent = "";
}

function transcriptLine(entry) {
  let el = entry.seq ? detailLines.get(entry.seq) : null;
  if (!el) {
    el = document.createElement("div");
    el.innerHTML = `<span class="who"></span><span class="text"></span>`;
    $("detail-transcript").append(el);
    if (entry.seq) detailLines.set(entry.seq, el);
  }
  el.className = `line ${entry.speaker}` + (entry.interrupted ? " interrupted" : "");
  el.querySelector(".who").textContent = entry.speaker;
  el.querySelector(".text").textContent = entry.text;
}

function latencyText(d) {
  // end of speech → transcript → first LLM token → first TTS audio → first audio out
  const steps = SPANS.slice(0, 4).map(([key, label]) => `${label} +${ms(d[key])}`);
  const turn = d.speech_stopped_to_first_audio_out;
  const total = turn != null ? `turn ${turn} ms`
    : `from request ${ms(d.response_started_to_first_audio_out)}`;
  return `latency ${d.response_id}: ${steps.join(" → ")} (${total})`;
}

function showLatency(rows) {
  const body = $("latency-rows");
  body.replaceChildren();
  for (const d of rows) {
    const row = document.createElement("tr");
    row.dataset.responseId = d.response_id;
    cell(row, short(d.response_id)).title = d.response_id;
    for (const [key] of SPANS) cell(row, d[key]);
    body.append(row);
  }
  $("latency").hidden = rows.length === 0;
  debug.latency = rows;
}

function describe(event) {
  const d = event.data || {};
  switch (event.kind) {
    case "speech_started": return "caller starts speaking (VAD)";
    case "speech_stopped": return "caller stops speaking";
    case "agent_audio": return `agent audio starts (${d.item_id})`;
    case "clear": return "barge-in: clear sent to the caller's playback";
    case "barge_in": return `truncate ${d.item_id} at heard ${d.heard_ms} ms`;
    case "turn_latency": return `turn latency ${d.ms} ms`;
    case "latency_breakdown": return latencyText(d);
    case "tool_call": return `tool call ${d.name}(${d.arguments || ""})`;
    case "tool_result": return `tool result ${d.output || ""}`;
    case "dtmf": return `DTMF ${d.digit}`;
    case "reconnected": return `model reconnected (connection ${d.connects})`;
    case "ended": return `call ended: ${d.reason}`;
    default: return event.kind;
  }
}

function timelineLine(event) {
  if (event.kind === "agent_text" || event.kind === "caller_text") return;
  const el = document.createElement("div");
  el.dataset.kind = event.kind;
  el.innerHTML = `<span class="t"></span><span class="what"></span>`;
  el.querySelector(".t").textContent = `${(event.call_ms / 1000).toFixed(2)} s`;
  el.querySelector(".what").textContent = describe(event);
  const box = $("detail-timeline");
  box.append(el);
  box.scrollTop = box.scrollHeight;
}

function apply(event) {
  debug.detailEvents += 1;
  if (event.type === "transcript") transcriptLine(event);
  else if (event.type === "observed") timelineLine(event);
  else if (event.type === "call_ended") {
    $("detail-state").textContent = "ended";
    loadRecorded(event.call_id);
  }
}

function openCall(callId, isLive) {
  resetDetail(callId, isLive ? "live" : "ended");
  if (!isLive) return loadRecorded(callId, true);
  detailStream = new EventSource(`/console/events/${encodeURIComponent(callId)}`);
  detailStream.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "snapshot") {
      for (const entry of event.timeline) apply(entry);
      if (event.call && event.call.state === "ended") loadRecorded(callId);
    } else {
      apply(event);
    }
  };
}

async function loadRecorded(callId, withTranscript = false) {
  if (callId !== detailId) return;
  const response = await fetch(`/api/calls/${encodeURIComponent(callId)}`);
  if (!response.ok) return;
  const call = await response.json();
  if (callId !== detailId) return;
  if (withTranscript) for (const turn of call.turns) transcriptLine(turn);
  showLatency(call.latency || []);
  const u = call.usage;
  $("usage").textContent = `${call.turns.length} turns · ${u.responses} responses · ` +
    `${u.input_tokens} in / ${u.output_tokens} out tokens · audio ${u.audio_in_s} s in, ` +
    `${u.audio_out_s} s out · est. $${u.cost_usd.toFixed(4)} · ended: ${call.end_reason || "–"}`;
  if (call.tape) {
    const link = $("tape-link");
    link.href = `/api/calls/${encodeURIComponent(callId)}/tape`;
    link.hidden = false;
  }
  if (call.recording) await showRecording(callId);
}

async function showRecording(callId) {
  const url = `/api/calls/${encodeURIComponent(callId)}/recording`;
  const response = await fetch(url);
  if (!response.ok) return;
  const bytes = await response.arrayBuffer();
  const decoder = new OfflineAudioContext(2, 8000, 8000);
  const audio = await decoder.decodeAudioData(bytes);
  $("recording").hidden = false;
  const player = $("player");
  player.src = url;
  debug.waveform = drawWaveform($("waveform"), audio, player);
}

// --------------------------------------------------------------- past calls

async function searchPast(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams();
  for (const name of ["number", "since", "until"]) if ($(name).value) params.set(name, $(name).value);
  const response = await fetch(`/api/calls?${params}`);
  if (!response.ok) return;
  const { calls } = await response.json();
  const body = $("past");
  body.replaceChildren();
  for (const call of calls) {
    if (live.has(call.call_id)) continue;
    const row = document.createElement("tr");
    row.className = "pick";
    row.dataset.callId = call.call_id;
    cell(row, short(call.call_id)).title = call.call_id;
    cell(row, call.from);
    cell(row, call.to);
    cell(row, call.agent);
    cell(row, call.started_at ? new Date(call.started_at).toLocaleString() : null);
    cell(row, call.duration_s != null ? `${call.duration_s.toFixed(1)} s` : null);
    cell(row, call.turns);
    cell(row, `$${call.cost_usd.toFixed(4)}`);
    cell(row, call.recording ? "●" : "");
    row.addEventListener("click", () => openCall(call.call_id, false));
    body.append(row);
  }
}

$("search").addEventListener("submit", searchPast);
watchCalls();
searchPast();
