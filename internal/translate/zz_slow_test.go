package translate_test

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
	"fmt"

	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
)

func TestZZSlow(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*/input.yaml")
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		data, _ := os.ReadFile(inputs[r.Intn(len(inputs))])
		for k := 0; k < 1+r.Intn(5); k++ {
			p := r.Intn(len(data))
			switch r.Intn(3) {
			case 0: data[p] = byte(r.Intn(256))
			case 1: data = append(data[:p], data[min(len(data), p+r.Intn(20)):]...)
			case 2: q := r.Intn(len(data)); data = append(data[:p], append([]byte(string(data[q:min(len(data),q+30)])), data[p:]...)...)
			}
			if len(data) == 0 { data = []byte("a") }
		}
		os.WriteFile("/tmp/zz_current.yaml", data, 0o644)
		start := time.Now()
		in, err := file.Parse("x", data)
		if err == nil { in.Cluster = "local"; translate.Translate(in) }
		if d := time.Since(start); d > 200*time.Millisecond { fmt.Println("slow", i, d); os.WriteFile(fmt.Sprintf("/tmp/zz_slow_%d.yaml", i), data, 0o644) }
	}
}
