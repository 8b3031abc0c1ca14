package translate

// SetPatchInPlace sets how many changes patchList makes in place (0: it
// always merges), until the returned function restores it.
func SetPatchInPlace(n int) (restore func()) {
	was := patchInPlace
	patchInPlace = n
	return func() { patchInPlace = was }
}
