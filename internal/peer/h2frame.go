package peer

import "golang.org/x/net/http2"

// writeHeaderBlock writes block, an encoded header block, for stream id as
// one HEADERS frame and as many CONTINUATION frames as it takes, each at
// most maxFrame bytes (the peer's SETTINGS_MAX_FRAME_SIZE). The client
// and the server both send their header blocks through it.
func writeHeaderBlock(fr *http2.Framer, id uint32, block []byte, endStream bool, maxFrame int) error {
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		err = fr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}
