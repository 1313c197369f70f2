// Playing a compressed stream (mp3, aac, opus, flac) in an <audio> element while it downloads.
// Media Source Extensions take mp3 and ADTS aac piece by piece in Chromium and Firefox; Ogg opus and
// raw flac are not MSE types, so those play once the last byte is in (the time to first byte is
// still what the stats show). Every byte is also kept for the download link.

const MIME = { mp3: "audio/mpeg", aac: "audio/aac", opus: "audio/ogg", flac: "audio/flac",
  wav: "audio/wav", pcm: "audio/pcm" };

export function mimeOf(format) { return MIME[format] || "application/octet-stream"; }

export function canStream(format) {
  return (format === "mp3" || format === "aac") && typeof MediaSource !== "undefined"
    && MediaSource.isTypeSupported(MIME[format]);
}

export class EncodedPlayer {
  constructor(audio, format) {
    if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);  // the previous request's audio
    this.audio = audio;
    this.format = format;
    this.streaming = canStream(format);
    this.queue = [];
    this.ended = false;
    this.buffer = null;
    if (this.streaming) {
      this.source = new MediaSource();
      audio.src = URL.createObjectURL(this.source);
      this.source.addEventListener("sourceopen", () => {
        this.buffer = this.source.addSourceBuffer(MIME[format]);
        // These containers carry no timestamps MSE could use: play pieces in arrival order.
        this.buffer.mode = "sequence";
        this.buffer.addEventListener("updateend", () => this.pump());
        this.pump();  // pieces (even the whole file) may have arrived before the source opened
      }, { once: true });
    }
  }

  push(bytes) {
    if (!this.streaming) return;
    this.queue.push(bytes.slice());
    this.pump();
    if (this.audio.paused) this.audio.play().catch(() => { /* waits for data; retried on the next piece */ });
  }

  pump() {
    if (!this.buffer || this.buffer.updating || this.source.readyState !== "open") return;
    if (this.queue.length) { this.buffer.appendBuffer(this.queue.shift()); return; }
    if (this.ended) this.source.endOfStream();
  }

  // All bytes are in: close the MSE stream, or hand the whole file to the element.
  finish(blob) {
    this.ended = true;
    if (this.streaming) { this.pump(); return; }
    this.audio.src = URL.createObjectURL(blob);
    this.audio.play().catch(() => { /* autoplay refused: the controls are there */ });
  }

  stop() {
    this.queue = [];
    this.audio.pause();
    if (this.streaming && this.source.readyState === "open") {
      try { this.source.endOfStream(); } catch (_) { /* mid-append */ }
    }
  }
}
