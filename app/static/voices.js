// The Voices tab: list (GET /v1/audio/voices), preview (GET …/{id}/sample), delete (DELETE …/{id}),
// clone from a recording or design from a description (POST /v1/audio/voices, multipart).
import { apiError, authHeaders } from "./speech-client.js";

const $ = (id) => document.getElementById(id);

export class VoicesTab {
  constructor({ apiKey, onVoices }) {
    this.apiKey = apiKey;
    this.onVoices = onVoices;
    this.previewUrl = null;
    for (const id of ["clone-language", "design-language"]) {
      $(id).replaceChildren(...[...$("language").options].map((o) => new Option(o.text, o.value)));
    }
    $("voices-refresh").addEventListener("click", () => this.refresh());
    $("clone-form").addEventListener("submit", (e) => { e.preventDefault(); this.create(e.target, "clone"); });
    $("design-form").addEventListener("submit", (e) => { e.preventDefault(); this.create(e.target, "design"); });
    // Without a transcript the clone uses only the speaker embedding: say so by what is required.
    $("clone-xvec").addEventListener("change", (e) => { $("clone-text").required = !e.target.checked; });
    $("clone-text").required = true;
    const pg = window.playground;
    Object.assign(pg, { voicesCreated: 0, voicesDeleted: 0, previews: 0, voiceErrors: [] });
  }

  // Creating needs the Qwen3 Base model, designing also VoiceDesign (`configured` of the qwen engine
  // in /readyz): a form that cannot work is disabled and says what the server lacks.
  setModels(kinds) {
    const needs = {
      "clone-form": kinds.includes("base") ? null : "--engine qwen --qwen-base",
      "design-form": kinds.includes("base") && kinds.includes("voice_design") ? null
        : "--engine qwen --qwen-base and --qwen-voice-design",
    };
    for (const [id, missing] of Object.entries(needs)) {
      const form = $(id);
      for (const el of form.elements) el.disabled = Boolean(missing);
      let note = form.querySelector(".unavailable");
      if (missing && !note) {
        note = document.createElement("p");
        note.className = "hint unavailable";
        form.querySelector("h2").after(note);
      }
      if (note) note.textContent = missing ? `Not available on this server: start it with ${missing}.` : "";
      form.dataset.available = missing ? "false" : "true";
    }
  }

  say(message, kind = "") {
    $("voices-msg").textContent = message;
    $("voices-msg").dataset.kind = kind;
    if (kind === "error") window.playground.voiceErrors.push(message);
  }

  async call(path, init = {}) {
    const response = await fetch(path, { ...init, headers: { ...authHeaders(this.apiKey()), ...(init.headers || {}) } });
    if (!response.ok) throw await apiError(response);
    return response;
  }

  async refresh() {
    try {
      const body = await (await this.call("/v1/audio/voices")).json();
      const voices = body.data || [];
      this.render(voices);
      this.onVoices(voices);
    } catch (e) {
      $("voice-rows").replaceChildren(this.row([e.status === 401 ? "Enter the server's API key above." : e.message]));
      if (e.status === 401) this.say("This server needs an API key.", "error");
    }
  }

  row(cells) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    td.className = "muted";
    td.textContent = cells[0];
    tr.append(td);
    return tr;
  }

  render(voices) {
    const rows = voices.map((v) => {
      const tr = document.createElement("tr");
      tr.dataset.voice = v.id;
      const name = document.createElement("td");
      const strong = document.createElement("strong");
      strong.textContent = v.name || v.id;
      const id = document.createElement("div");
      id.className = "muted mono";
      id.textContent = v.description ? `${v.id} · ${v.description}` : v.id;
      name.append(strong, id);
      const cells = [v.kind, v.engine, v.language, v.source || "builtin"].map((text) => {
        const td = document.createElement("td");
        td.textContent = text || "";
        return td;
      });
      const actions = document.createElement("td");
      actions.className = "actions-cell";
      // Only clone voices have a reference clip to play; only the user's own voices can be deleted.
      if (v.sample_url) actions.append(this.button("Preview", `Preview ${v.name || v.id}`, () => this.preview(v)));
      if (v.deletable) {
        actions.append(this.button("Delete", `Delete ${v.name || v.id}`, () => this.remove(v), "danger"));
      }
      tr.append(name, ...cells, actions);
      return tr;
    });
    $("voice-rows").replaceChildren(...(rows.length ? rows : [this.row(["No voices."])]));
  }

  button(text, label, onClick, extra = "") {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `small ${extra}`.trim();
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }

  async preview(voice) {
    try {
      this.say(`Loading a sample of ${voice.name || voice.id}…`);
      // An <audio src> cannot send the Bearer key: fetch it, then play the blob.
      const blob = await (await this.call(voice.sample_url)).blob();
      if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
      this.previewUrl = URL.createObjectURL(blob);
      const audio = $("preview");
      audio.src = this.previewUrl;
      window.playground.previews += 1;
      window.playground.lastPreviewBytes = blob.size;
      this.say(`Playing ${voice.name || voice.id} (${(blob.size / 1024).toFixed(0)} KB).`, "ok");
      await audio.play().catch(() => this.say(`Sample of ${voice.name || voice.id} loaded; the browser refused to autoplay it.`));
    } catch (e) {
      this.say(`No sample for ${voice.id}: ${e.message}`, "error");
    }
  }

  async remove(voice) {
    if (!window.confirm(`Delete the voice "${voice.name || voice.id}"? This cannot be undone.`)) return;
    try {
      await this.call(`/v1/audio/voices/${encodeURIComponent(voice.id)}`, { method: "DELETE" });
      window.playground.voicesDeleted += 1;
      this.say(`Deleted ${voice.id}.`, "ok");
      await this.refresh();
    } catch (e) {
      this.say(`Could not delete ${voice.id}: ${e.message}`, "error");
    }
  }

  async create(form, kind) {
    const data = new FormData(form);
    for (const [name, value] of [...data.entries()]) if (value === "") data.delete(name);  // unset, not empty
    // Checkboxes are sent as explicit booleans: an unchecked box would otherwise be absent.
    if (kind === "clone") {
      data.set("x_vector_only", String($("clone-xvec").checked));
      // The box is the speaker's agreement, asked for here; the API's `consent` names a stored consent
      // recording (POST /v1/audio/voice_consents), which the playground does not make.
      data.delete("consent");
    }
    const submit = form.querySelector('button[type="submit"]');
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    this.say(kind === "clone" ? "Uploading and preparing the voice…" : "Designing the voice (this renders a sample)…");
    try {
      const voice = await (await this.call("/v1/audio/voices", { method: "POST", body: data })).json();
      window.playground.voicesCreated += 1;
      window.playground.lastCreatedVoice = voice.id;
      this.say(`Added ${voice.name || voice.id} (${voice.id}). It is in the voice picker now.`, "ok");
      form.reset();
      $("clone-text").required = true;
      await this.refresh();
    } catch (e) {
      this.say(`Could not add the voice: ${e.message}`, "error");
    } finally {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }
}
