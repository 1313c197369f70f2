// The frontend's lib/api.ts derives its endpoints from where it is served; the gateway serves both.
export const SPEAK_ENDPOINT = `${window.location.origin.replace(/^http/, "ws")}/api/v1/speak`;
