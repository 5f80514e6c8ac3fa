// Audio worklets of the softphone, both running at the negotiated wire rate (8 kHz for
// mu-law, 24 kHz for PCM16), so one sample here is one sample on the wire and positions
// need no conversion.

const FRAME_MS = 20; // what Twilio sends, and what we send

// Microphone -> 20 ms frames for the main thread to encode and send.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate * FRAME_MS / 1000);
    this.frame = new Float32Array(this.size);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    let i = 0;
    while (i < input.length) {
      const n = Math.min(this.size - this.fill, input.length - i);
      this.frame.set(input.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.size) {
        this.port.postMessage(this.frame);
        this.frame = new Float32Array(this.size);
        this.fill = 0;
      }
    }
    return true;
  }
}

// Twilio's playback contract, exactly: audio is queued and played in order; a mark is
// echoed when the audio queued before it has played (at once if nothing is queued);
// clear empties the queue and hands back every pending mark at once.
// Positions count samples of the outbound stream (silence while starved is not counted).
class Playout extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.played = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.type === "audio") {
      this.queue.push({ samples: message.samples, offset: 0 });
    } else if (message.type === "mark") {
      if (this.queue.length === 0) this.echo(message.name);
      else this.queue.push({ mark: message.name });
    } else if (message.type === "clear") {
      const marks = [];
      let dropped = 0;
      for (const entry of this.queue) {
        if (entry.mark !== undefined) marks.push(entry.mark);
        else dropped += entry.samples.length - entry.offset;
      }
      this.queue = [];
      this.port.postMessage({ type: "cleared", played: this.played, dropped, marks, at: currentTime });
    }
  }

  echo(name) {
    this.port.postMessage({ type: "mark", name, played: this.played, at: currentTime });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (this.queue.length && (i < out.length || this.queue[0].mark !== undefined)) {
      const head = this.queue[0];
      if (head.mark !== undefined) {
        this.echo(head.mark);
        this.queue.shift();
        continue;
      }
      const n = Math.min(out.length - i, head.samples.length - head.offset);
      out.set(head.samples.subarray(head.offset, head.offset + n), i);
      i += n;
      head.offset += n;
      this.played += n;
      if (head.offset >= head.samples.length) this.queue.shift();
    }
    out.fill(0, i);
    return true;
  }
}

registerProcessor("softphone-capture", Capture);
registerProcessor("softphone-playout", Playout);
