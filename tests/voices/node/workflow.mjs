// OpenAI's custom-voice workflow, written as a Node user writes it with the official SDK, unchanged:
// consent -> clone from a sample (no transcript) -> speak with {id} on a dated model -> design from a
// prompt -> list/retrieve/update/delete consents -> delete voices. Prints what it saw as one JSON object.
// Env: GATEWAY_URL (the /v1 base), GATEWAY_KEY, SAMPLE and RECORDING (audio files).
import fs from 'node:fs';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_KEY, maxRetries: 0,
                            timeout: 300_000 });
const seen = {};

const consent = await client.audio.voiceConsents.create({
  name: 'Grace', language: 'en-US', recording: fs.createReadStream(process.env.RECORDING) });
seen.consent = consent;

const voice = await client.audio.voices.create({
  name: 'Grace Hopper', audio_sample: fs.createReadStream(process.env.SAMPLE), consent: consent.id });
seen.voice = voice;

// max_new_tokens: a gateway extension, only to keep random test weights short.
const { data: speech, response } = await client.audio.speech.create({
  model: 'gpt-4o-mini-tts-2025-12-15', voice: { id: voice.id }, input: 'Hello from Node.', response_format: 'wav',
  max_new_tokens: 8 }).withResponse();
seen.speech = { bytes: Buffer.from(await speech.arrayBuffer()).toString('base64'),
                voice: response.headers.get('x-voice'), type: response.headers.get('content-type') };

// seed: a gateway extension, so random test weights render a long enough sample.
seen.designed = await client.audio.voices.create({ name: 'Node Narrator', type: 'prompt',
                                                    prompt: 'A calm, deep narrator.', seed: 0 });

const second = await client.audio.voiceConsents.create({
  name: 'Second', language: 'fr-FR', recording: fs.createReadStream(process.env.RECORDING) });
seen.listed = [];
for await (const item of client.audio.voiceConsents.list({ limit: 1 })) seen.listed.push(item.id);
seen.retrieved = await client.audio.voiceConsents.retrieve(second.id);
seen.updated = await client.audio.voiceConsents.update(second.id, { name: 'Second, renamed' });
seen.deletedConsents = [await client.audio.voiceConsents.delete(consent.id),
                        await client.audio.voiceConsents.delete(second.id)];
try {
  await client.audio.voiceConsents.retrieve(second.id);
} catch (err) {
  seen.afterDelete = { status: err.status, code: err.code };
}
seen.deletedVoices = [await client.audio.voices.delete(voice.id), await client.audio.voices.delete(seen.designed.id)];
console.log(JSON.stringify(seen));
