// Renders one component that uses the hook, as the frontend's speak page does, and hands the hook's
// state and actions to the test through window.makima (the hook itself is not touched).
import { createElement, useEffect } from "react";
import { createRoot } from "react-dom/client";
import { useSpeakWebSocket } from "./hooks/useSpeakWebSocket";

type Hook = ReturnType<typeof useSpeakWebSocket>;
const seen: { statuses: string[]; hook: Hook | null } = { statuses: [], hook: null };
(window as unknown as { makima: typeof seen }).makima = seen;

function SpeakPage() {
  const hook = useSpeakWebSocket();
  seen.hook = hook;
  useEffect(() => {
    seen.statuses.push(hook.status);
  }, [hook.status]);
  return createElement("p", { id: "status" }, hook.status);
}

createRoot(document.getElementById("root")!).render(createElement(SpeakPage));
