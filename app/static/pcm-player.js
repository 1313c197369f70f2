// Gapless playback of raw PCM16 (24 kHz mono) as it arrives: the same Web Audio approach as
// /demo/speak. Each piece becomes an AudioBuffer scheduled to start exactly where the previous one
// ends, so network jitter never leaves a click between pieces as long as audio arrives faster than
// it plays.

export const SAMPLE_RATE = 24000;

export class PcmPlayer {
  constructor(sampleRate = SAMPLE_RATE) {
    this.sampleRate = sampleRate;
    this.ctx = null;
    this.playhead = 0;       // AudioContext time at which the next piece starts
    this.sources = new Set(); // scheduled, not yet finished: stopped by stop()
    this.carry = null;        // an odd trailing byte from an HTTP chunk, kept for the next one
    this.samples = 0;         // samples scheduled since the last reset()
  }

  // Must run inside a user gesture the first time, or the browser keeps the context suspended.
  async unlock() {
    this.ctx = this.ctx || new AudioContext({ sampleRate: this.sampleRate });
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  // A WebSocket frame always holds whole samples; an HTTP chunk may split one, hence `carry`.
  pushBytes(bytes) {
    let view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    if (this.carry !== null) {
      const joined = new Uint8Array(view.length + 1);
      joined[0] = this.carry;
      joined.set(view, 1);
      view = joined;
      this.carry = null;
    }
    if (view.length % 2 === 1) {
      this.carry = view[view.length - 1];
      view = view.subarray(0, view.length - 1);
    }
    if (view.length === 0) return 0;  // createBuffer throws on zero length
    // Copy into an aligned buffer: Int16Array needs an even byte offset.
    const pcm = new Int16Array(view.slice().buffer);
    return this.pushInt16(pcm);
  }

  pushInt16(pcm) {
    if (!this.ctx || pcm.length === 0) return 0;
    const audio = this.ctx.createBuffer(1, pcm.length, this.sampleRate);
    const channel = audio.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = this.ctx.createBufferSource();
    source.buffer = audio;
    source.connect(this.ctx.destination);
    // A small lead on the first piece (or after an underrun) so its start is never in the past.
    this.playhead = Math.max(this.playhead, this.ctx.currentTime + 0.03);
    source.start(this.playhead);
    this.playhead += audio.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
    this.samples += pcm.length;
    return pcm.length;
  }

  // Seconds of scheduled audio not yet played.
  get pending() {
    return this.ctx ? Math.max(0, this.playhead - this.ctx.currentTime) : 0;
  }

  stop() {
    for (const s of this.sources) {
      try { s.stop(); } catch (_) { /* never started */ }
    }
    this.sources.clear();
    this.playhead = 0;
    this.carry = null;
  }

  reset() {
    this.stop();
    this.samples = 0;
  }
}
