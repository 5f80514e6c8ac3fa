// The browser softphone: a caller leg that speaks Twilio Media Streams to the bridge.
// The page is to the bridge what Twilio is: it sends connected/start/media/mark/dtmf/stop
// and plays media with Twilio's exact contract (see worklets.js), so the bridge runs the
// very same barge-in accounting as for a phone call.  The wire encoding is negotiated
// in the WebSocket handshake: the page offers mu-law 8 kHz and PCM16 24 kHz as
// subprotocols, the bridge picks one, and the audio graph runs at the picked rate.
import * as mulaw from "./mulaw.js";
import * as pcm16 from "./pcm16.js";
import { fromBase64, toBase64 } from "./mulaw.js";

const CODECS = {
  "softphone.pcm16": { name: "pcm16", rate: 24000, codec: pcm16, format: { encoding: "audio/pcm", sampleRate: 24000, channels: 1 } },
  "softphone.mulaw": { name: "mulaw", rate: 8000, codec: mulaw, format: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 } },
};
const OFFER = Object.keys(CODECS);

const $ = (id) => document.getElementById(id);
const STATIC = "/operator/static/";
const RECONNECTS = 3;

// What happened, for the operator (and for the browser tests, which read it).
const debug = {
  state: "idle",
  callIds: [],
  media: [],      // {position, size, at}: outbound stream positions, as Twilio numbers them
  marks: [],      // {name, position, echoed, played, cleared}
  clears: [],     // {played, dropped, marks}
  transcripts: [],
  observed: [],
  levels: [],     // {t, caller, agent}: analyser RMS samples, every 50 ms
  agentPeak: 0,
  errors: [],
};
window.softphone = debug;

let ctx = null;
let mic = null;
let playout = null;
let capture = null;
let agentAnalyser = null;
let callerAnalyser = null;
let ws = null;
let call = null;
let meterTimer = null;

function setStatus(text) { $("status").textContent = text; debug.state = text; }
function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
  if (text) debug.errors.push(text);
}

async function loadConfig() {
  const response = await fetch("/softphone/config");
  if (response.status === 401) return sessionExpired();
  const config = await response.json();
  for (const name of config.agents) $("agent").add(new Option(name, name, false, name === config.default_agent));
  for (const voice of config.voices) $("voice").add(new Option(voice, voice, false, voice === config.default_voice));
}

function sessionExpired() {
  showError("Your session has expired. Sign in again at /login.");
  setStatus("Signed out");
  $("call").disabled = true;
}

async function openMic() {
  if (mic) return;
  try {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (error) {
    const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
    throw new Error(denied
      ? "Microphone access was denied. Allow the microphone for this site and try again."
      : `No microphone available (${error && error.name}).`);
  }
}

// One context at the wire rate: the browser resamples the microphone and the speaker,
// and every sample in the worklets is one sample on the wire.  A reconnect that
// negotiates another encoding rebuilds the graph at the new rate.
async function startAudio(rate) {
  if (ctx && ctx.sampleRate === rate) return;
  if (ctx) {
    clearInterval(meterTimer);
    await ctx.close();
  }
  ctx = new AudioContext({ sampleRate: rate });
  await ctx.audioWorklet.addModule(STATIC + "worklets.js");
  const source = ctx.createMediaStreamSource(mic);
  capture = new AudioWorkletNode(ctx, "softphone-capture", { numberOfOutputs: 0 });
  callerAnalyser = ctx.createAnalyser();
  callerAnalyser.fftSize = 512;
  source.connect(capture);
  source.connect(callerAnalyser);
  playout = new AudioWorkletNode(ctx, "softphone-playout", { numberOfInputs: 0, outputChannelCount: [1] });
  agentAnalyser = ctx.createAnalyser();
  agentAnalyser.fftSize = 512;
  playout.connect(agentAnalyser);
  agentAnalyser.connect(ctx.destination);
  capture.port.onmessage = (event) => sendAudio(event.data);
  playout.port.onmessage = (event) => played(event.data);
  await ctx.resume();
  meterTimer = setInterval(meters, 50);
}

function rms(analyser) {
  const data = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(data);
  let sum = 0;
  for (const v of data) sum += v * v;
  return Math.sqrt(sum / data.length);
}

function meters() {
  const caller = rms(callerAnalyser);
  const agent = rms(agentAnalyser);
  debug.agentPeak = Math.max(debug.agentPeak, agent);
  if (call) debug.levels.push({ t: Math.round(performance.now() - call.t0), caller, agent });
  for (const [who, level] of [["caller", caller], ["agent", agent]]) {
    const db = level > 0 ? 20 * Math.log10(level) : -120;
    $(`${who}-meter`).firstElementChild.style.width = `${Math.max(0, Math.min(100, (db + 70) * 100 / 70))}%`;
    $(`${who}-db`).textContent = db > -100 ? `${db.toFixed(0)} dBFS` : "–";
    const on = db > -45;
    const badge = $(`${who}-badge`);
    badge.classList.toggle("on", on);
    badge.textContent = who === "caller" ? (on ? "you: speaking" : "you: silent") : (on ? "agent: speaking" : "agent: listening");
  }
}

// ------------------------------------------------------------------ the call

function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The ticket first: it proves the session is still valid before the microphone opens.
async function ticket() {
  const response = await fetch("/softphone/ticket", { method: "POST" });
  if (response.status === 401) { sessionExpired(); return null; }
  if (!response.ok) throw new Error(`The bridge refused the call (HTTP ${response.status}).`);
  return response.json();
}

async function dial(attempt = 0, granted = null) {
  showError("");
  setStatus(attempt ? `Reconnecting (${attempt}/${RECONNECTS})…` : "Connecting…");
  const grant = granted || (await ticket());
  if (!grant) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/softphone/ws?ticket=${encodeURIComponent(grant.ticket)}`;
  call = {
    id: grant.call_id, streamSid: "MZ" + randomHex(16), seq: 0, chunk: 0, received: 0,
    t0: performance.now(), ended: false, attempt,
  };
  debug.callIds.push(call.id);
  $("call-id").textContent = call.id;
  const socket = new WebSocket(url, OFFER);
  ws = socket;
  debug.socket = socket;
  socket.onopen = async () => {
    const codec = CODECS[socket.protocol] || CODECS["softphone.mulaw"];
    call.codec = codec.codec;
    debug.encoding = codec.name;
    debug.sampleRate = codec.rate;
    try {
      await startAudio(codec.rate);
    } catch (error) {
      fail(error);
      socket.close(1000, "audio unavailable");
      return;
    }
    if (ws !== socket) return;  // closed (refused, or hung up) while the audio started
    send({ event: "connected", protocol: "Call", version: "1.0.0" });
    send({
      event: "start",
      sequenceNumber: next(),
      streamSid: call.streamSid,
      start: {
        accountSid: "browser",
        streamSid: call.streamSid,
        callSid: call.id,
        tracks: ["inbound"],
        mediaFormat: codec.format,
        customParameters: { ...grant.parameters, agent: $("agent").value, voice: $("voice").value, From: "browser" },
      },
    });
    call.started = true;
    setStatus("In call");
    $("hangup").disabled = false;
    $("call").disabled = true;
  };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = (event) => closed(socket, event);
}

function next() { call.seq += 1; return String(call.seq); }

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function sendAudio(frame) {
  if (!call || !call.started || call.ended) return;
  const payload = toBase64(call.codec.encode(frame));
  call.chunk += 1;
  send({
    event: "media", sequenceNumber: next(), streamSid: call.streamSid,
    media: { track: "inbound", chunk: String(call.chunk), timestamp: String((call.chunk - 1) * 20), payload },
  });
}

function receive(message) {
  switch (message.event) {
    case "media": {
      const samples = call.codec.decode(fromBase64(message.media.payload));
      debug.media.push({ position: call.received, size: samples.length, at: performance.now() - call.t0 });
      call.received += samples.length;
      playout.port.postMessage({ type: "audio", samples }, [samples.buffer]);
      break;
    }
    case "mark":
      debug.marks.push({ name: message.mark.name, position: call.received, echoed: null });
      playout.port.postMessage({ type: "mark", name: message.mark.name });
      break;
    case "clear":
      playout.port.postMessage({ type: "clear" });
      break;
    case "transcript":
      showTranscript(message.transcript);
      break;
    case "observed":
      observed(message.observed);
      break;
    default:
      break;
  }
}

function played(message) {
  if (message.type === "mark") {
    echo(message.name, message.played, false);
  } else if (message.type === "cleared") {
    debug.clears.push({ played: message.played, dropped: message.dropped, marks: message.marks, at: performance.now() - (call ? call.t0 : 0) });
    for (const name of message.marks) echo(name, message.played, true);
  }
}

function echo(name, position, cleared) {
  const mark = debug.marks.find((m) => m.name === name && m.echoed === null);
  if (mark) { mark.echoed = performance.now() - call.t0; mark.played = position; mark.cleared = cleared; }
  send({ event: "mark", sequenceNumber: next(), streamSid: call.streamSid, mark: { name } });
}

function observed(event) {
  debug.observed.push(event);
  if (event.kind === "turn_latency") $("latency").textContent = `${event.ms} ms`;
  if (event.kind === "agent_text") partial("agent", event.item_id, event.delta);
}

const partials = new Map();

function partial(speaker, itemId, delta) {
  let el = partials.get(itemId);
  if (!el) {
    el = line(speaker, "");
    el.classList.add("partial");
    partials.set(itemId, el);
  }
  el.querySelector(".text").textContent += delta;
  scroll();
}

function line(speaker, text) {
  const el = document.createElement("div");
  el.className = `line ${speaker}`;
  el.innerHTML = `<span class="who"></span><span class="text"></span>`;
  el.querySelector(".who").textContent = speaker === "caller" ? "you" : speaker;
  el.querySelector(".text").textContent = text;
  $("transcript").append(el);
  return el;
}

// Final lines by call and seq: a line can be restated (a truncated agent turn, once
// the backend says which words it kept), and then replaces the one shown.
const finals = new Map();

function showTranscript(entry) {
  debug.transcripts.push(entry);
  let el = entry.item_id ? partials.get(entry.item_id) : null;
  const key = entry.seq ? `${call && call.id}:${entry.seq}` : null;
  const shown = key ? finals.get(key) : null;
  if (shown) {
    el = shown;
    el.querySelector(".text").textContent = entry.text;
  } else if (el) {
    partials.delete(entry.item_id);
    el.classList.remove("partial");
    el.querySelector(".text").textContent = entry.text;
  } else {
    el = line(entry.speaker, entry.text);
  }
  if (key) finals.set(key, el);
  el.classList.toggle("interrupted", !!entry.interrupted);
  scroll();
}

function scroll() { const box = $("transcript"); box.scrollTop = box.scrollHeight; }

function closed(socket, event) {
  if (socket !== ws) return;
  const current = call;
  ws = null;
  $("hangup").disabled = true;
  $("call").disabled = false;
  if (!current || current.ended) { setStatus("Call ended"); return; }
  if (event.code === 1013) {  // busy, draining, or its ticket ledger is not answering
    current.ended = true;
    showError(`The bridge cannot take the call now: ${event.reason || "try again later"}.`);
    setStatus("Not connected");
    return;
  }
  if (!current.started) {
    showError(event.code === 1006 ? "The bridge refused the connection (session expired or ticket used)." : `Connection refused (${event.code}).`);
    setStatus("Not connected");
    return;
  }
  if (event.code === 1000) {
    current.ended = true;
    setStatus(`Call ended${event.reason ? ": " + event.reason : ""}`);
    line("system", `call ended${event.reason ? " (" + event.reason + ")" : ""}`);
    return;
  }
  // Lost without a proper close: the network, or the bridge restarted.  A new call
  // starts (the conversation does not carry over).
  if (current.attempt < RECONNECTS) {
    showError("Connection lost. Reconnecting…");
    line("system", "connection lost, reconnecting");
    setTimeout(() => dial(current.attempt + 1).catch(fail), 1000 * (current.attempt + 1));
  } else {
    showError("Connection lost. Press Call to try again.");
    setStatus("Disconnected");
  }
}

function fail(error) {
  showError(error.message || String(error));
  setStatus("Not connected");
  $("call").disabled = false;
}

function hangup() {
  if (!call || !ws) return;
  call.ended = true;
  send({ event: "stop", sequenceNumber: next(), streamSid: call.streamSid, stop: { accountSid: "browser", callSid: call.id } });
  ws.close(1000, "caller hung up");
}

$("call").addEventListener("click", async () => {
  $("call").disabled = true;
  try {
    const grant = await ticket();
    if (!grant) return;
    await openMic();
    // The ticket names the bridge's preferred encoding: the audio graph starts at its
    // rate now, as the call's audio must not wait for it; the handshake confirms it.
    const hinted = Object.values(CODECS).find((c) => c.name === grant.encoding);
    await startAudio((hinted || CODECS["softphone.mulaw"]).rate);
    await dial(0, grant);
  } catch (error) {
    fail(error);
  }
});
$("hangup").addEventListener("click", hangup);
window.addEventListener("DOMContentLoaded", () => loadConfig().catch(fail));
