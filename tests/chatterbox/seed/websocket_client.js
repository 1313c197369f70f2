const ws = new WebSocket("ws://localhost:8081/ws/tts");

ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);

    if (msg.type === "ready") {
        // Server is ready, send request
        ws.send(JSON.stringify({
            type: "say",
            id: "request-1",
            text: "Hello, world!",
            voice: {
                exaggeration: 0.5
            },
            audio: {
                stream: true,
                chunk_size_ms: 40
            }
        }));
    } else if (msg.type === "chunk") {
        // Process audio chunk
        const audioData = atob(msg.data);
        // Play or buffer audio...
    } else if (msg.type === "done") {
        console.log(`Generation complete: ${msg.duration_seconds}s`);
    }
};
