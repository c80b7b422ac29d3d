package protocol

import "github.com/ociapp/ociapp/internal/mpwire"

// appendBinOrNil writes b as bin, or nil when b is nil.
func appendBinOrNil(dst, b []byte) []byte {
	if b == nil {
		return mpwire.AppendNil(dst)
	}
	return mpwire.AppendBin(dst, b)
}
