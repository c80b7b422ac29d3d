package bytesize

import "testing"

func TestFormat(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 - 1, "1024.0 KiB"},
		{1380352, "1.3 MiB"},
		{20 << 20, "20.0 MiB"},
		{1 << 30, "1.0 GiB"},
		{5 << 40, "5120.0 GiB"},
		{-5, "-5 B"},
	}
	for _, tt := range tests {
		if got := Format(tt.n); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1048576", 1 << 20, true}, {"512m", 512 << 20, true}, {"512MB", 512 << 20, true},
		{"64MiB", 64 << 20, true}, {"2g", 2 << 30, true}, {"1.5G", 3 << 29, true}, {"8k", 8 << 10, true},
		{"", 0, false}, {"-1m", 0, false}, {"lots", 0, false}, {"1x", 0, false}, {"99999999t", 0, false},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{"0", "512m", "1.5G", "64MiB", "8k", "-1", "1e30t", "NaN", "inf"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n, err := Parse(in)
		if err == nil && n < 0 {
			t.Fatalf("Parse(%q) = %d", in, n)
		}
	})
}

func TestShort(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1 << 10, "1k"}, {64 << 10, "64k"}, {1 << 20, "1m"}, {128 << 20, "128m"},
		{1536 << 20, "1536m"}, {1 << 30, "1g"}, {10 << 30, "10g"}, {3 << 40, "3t"}, {-2 << 20, "-2m"},
	}
	for _, tt := range tests {
		got := Short(tt.n)
		if got != tt.want {
			t.Errorf("Short(%d) = %q, want %q", tt.n, got, tt.want)
		}
		if back, err := Parse(got); tt.n >= 0 && (err != nil || back != tt.n) {
			t.Errorf("Parse(Short(%d)) = %d, %v", tt.n, back, err)
		}
	}
}
