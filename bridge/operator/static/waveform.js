// A two-channel waveform on a canvas (min/max per pixel column), with a playhead that
// follows the <audio> element while it plays.
export function drawWaveform(canvas, audio, player) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const lane = height / audio.numberOfChannels;
  const colours = ["#1f9d6a", "#7b4fd6"];
  const peaks = [];
  const base = document.createElement("canvas");
  base.width = width;
  base.height = height;
  const b = base.getContext("2d");
  b.fillStyle = "#fbfcfd";
  b.fillRect(0, 0, width, height);
  for (let ch = 0; ch < audio.numberOfChannels; ch++) {
    const data = audio.getChannelData(ch);
    const per = Math.max(1, Math.floor(data.length / width));
    const mid = lane * ch + lane / 2;
    let peak = 0;
    b.fillStyle = colours[ch % colours.length];
    for (let x = 0; x < width; x++) {
      let lo = 0;
      let hi = 0;
      for (let i = x * per; i < Math.min(data.length, (x + 1) * per); i++) {
        if (data[i] < lo) lo = data[i];
        if (data[i] > hi) hi = data[i];
      }
      peak = Math.max(peak, hi, -lo);
      b.fillRect(x, mid - hi * lane / 2, 1, Math.max(1, (hi - lo) * lane / 2));
    }
    peaks.push(peak);
  }
  const paint = () => {
    g.drawImage(base, 0, 0);
    if (player && player.duration) {
      const x = (player.currentTime / player.duration) * width;
      g.fillStyle = "#c2410c";
      g.fillRect(x, 0, 2, height);
    }
    if (player && !player.paused) requestAnimationFrame(paint);
  };
  paint();
  if (player) {
    player.addEventListener("play", paint);
    player.addEventListener("seeked", paint);
  }
  return { channels: audio.numberOfChannels, seconds: audio.duration, peaks };
}
