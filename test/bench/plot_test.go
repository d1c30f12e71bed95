package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

// svgRoot decodes data as XML and returns its root element's name and the
// character data of every element (the text the picture shows).
func svgRoot(t *testing.T, data []byte) (string, string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	var root string
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, data)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
		case xml.CharData:
			text.Write(el)
		}
	}
	return root, text.String()
}

func TestPlotsAreValidSVG(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	var cdf bytes.Buffer
	err := WriteStartCDF(&cdf, "start latency", []Series{
		{Name: "floor", Samples: ms(30, 35, 40, 80)},
		{Name: "ours, HTTP API", Samples: ms(0, 38, 45, 90)}, // 0 must not break the log scale
		{Name: "nothing measured"},
		{Name: "original", Samples: ms(800, 900, 1500)},
	})
	if err != nil {
		t.Fatal(err)
	}
	root, text := svgRoot(t, cdf.Bytes())
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	for _, want := range []string{"start latency", "floor, n=4", "ours, HTTP API, n=4", "original, n=3", "fraction of starts"} {
		if !strings.Contains(text, want) {
			t.Errorf("CDF lacks %q; text: %q", want, text)
		}
	}
	if strings.Contains(text, "nothing measured") {
		t.Error("a series without samples is drawn")
	}

	var curve bytes.Buffer
	err = WriteBurstCurve(&curve, "concurrent starts", []BurstSeries{
		{Name: "1000 at once", Done: []time.Duration{3 * time.Second, time.Second, 2 * time.Second}},
	}, 50, 100)
	if err != nil {
		t.Fatal(err)
	}
	root, text = svgRoot(t, curve.Bytes())
	if root != "svg" || !strings.Contains(text, "1000 at once") || !strings.Contains(text, "client floor: burst 100, then 50 creates/s") {
		t.Errorf("burst curve: root %q, text %q", root, text)
	}

	if err := WriteStartCDF(io.Discard, "x", nil); err == nil {
		t.Error("a CDF without samples must be an error")
	}
	if err := WriteBurstCurve(io.Discard, "x", nil, 50, 100); err == nil {
		t.Error("a curve without starts must be an error")
	}
}
