package apiserver

// Goroutine stack pre-growth for writes.
//
// net/http serves every HTTP/2 request on a fresh goroutine, which starts
// with a small stack. A write runs apimachinery's field manager
// (structured-merge-diff walks the object recursively through reflection)
// and reaches a stack several times the initial size, so the runtime grows
// the stack, copying every frame each time, two or three times per
// request: about a tenth of the server's CPU per Service create. Growing
// the stack once, at the top of the handler where it is shallow, makes
// that a single cheap copy.

// writeStackFrame is the frame size growStack asks for. The runtime doubles
// the stack until the frame fits on top of what is in use, so the goroutine
// ends up with a 64 KiB stack: with 32 KiB a Service create still grew it
// again inside the field manager (measured with pprof: runtime.newstack
// under structured-merge-diff went from ~9% of the server's CPU to ~2%,
// growStack itself included).
const writeStackFrame = 40 << 10

// growStack makes the calling goroutine's stack large enough for a write.
//
//go:noinline
func growStack() {
	var frame [writeStackFrame]byte
	touchFrame(&frame)
}

// touchFrame keeps growStack's frame from being optimised away; the
// pointer does not escape, so the frame stays on the stack.
//
//go:noinline
func touchFrame(b *[writeStackFrame]byte) { b[len(b)-1] = 1 }
