package bench

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Series is one method's start latencies, for the CDF.
type Series struct {
	Name    string
	Samples []time.Duration
}

// palette: distinguishable on white and in grey scale (dash patterns too).
var palette = []color.Color{
	color.RGBA{R: 0x1b, G: 0x9e, B: 0x77, A: 0xff},
	color.RGBA{R: 0xd9, G: 0x5f, B: 0x02, A: 0xff},
	color.RGBA{R: 0x75, G: 0x70, B: 0xb3, A: 0xff},
	color.RGBA{R: 0xe7, G: 0x29, B: 0x8a, A: 0xff},
	color.RGBA{R: 0x66, G: 0xa6, B: 0x1e, A: 0xff},
	color.RGBA{R: 0x66, G: 0x66, B: 0x66, A: 0xff},
}

var dashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}, {vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}}

func styleLine(l *plotter.Line, i int) {
	l.Color = palette[i%len(palette)]
	l.Width = vg.Points(1.5)
	l.Dashes = dashes[i%len(dashes)]
}

// cdfPoints is the empirical CDF of samples in milliseconds: a step at
// every sample, from 0 to 1.
func cdfPoints(samples []time.Duration) plotter.XYs {
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	pts := make(plotter.XYs, 0, 2*len(s))
	for i, d := range s {
		x := ms(d)
		pts = append(pts, plotter.XY{X: x, Y: float64(i) / float64(len(s))}, plotter.XY{X: x, Y: float64(i+1) / float64(len(s))})
	}
	return pts
}

// WriteStartCDF draws the start-latency distribution of every series (x:
// latency in ms on a log scale, so the floor's tens of ms and the
// original's seconds fit one picture; y: fraction of starts) as SVG.
func WriteStartCDF(w io.Writer, title string, series []Series) error {
	p, err := startCDFPlot(title, series)
	if err != nil {
		return err
	}
	return writeSVG(w, p, 10*vg.Inch, 5*vg.Inch)
}

func startCDFPlot(title string, series []Series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "start latency, request → reported running (ms, log scale)"
	p.Y.Label.Text = "fraction of starts"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1.02
	// The axis starts at 0.5 ms, leaving the upper left free for the
	// legend (every method's starts take longer than that).
	p.X.Min = 0.5
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	p.Add(plotter.NewGrid())
	drawn := 0
	for i, s := range series {
		if len(s.Samples) == 0 {
			continue
		}
		pts := cdfPoints(s.Samples)
		for j := range pts {
			pts[j].X = max(pts[j].X, 0.5) // log scale: no zero
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("CDF of %s: %w", s.Name, err)
		}
		styleLine(l, i)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s, n=%d", s.Name, len(s.Samples)), l)
		drawn++
	}
	if drawn == 0 {
		return nil, fmt.Errorf("start CDF: no samples")
	}
	return p, nil
}

// BurstSeries is one burst of concurrent starts for the curve.
type BurstSeries struct {
	Name string
	// Done are the successful starts' latencies (each start was issued at
	// time 0), in any order.
	Done []time.Duration
}

// WriteBurstCurve draws projects reported running over time since the
// burst was issued, for each burst, with the client floor: the most pod
// creates a client limited to qps after a burst of burst can have sent
// by then, min(n, burst + qps·t).
func WriteBurstCurve(w io.Writer, title string, bursts []BurstSeries, qps float32, burst int) error {
	p, err := burstCurvePlot(title, bursts, qps, burst)
	if err != nil {
		return err
	}
	return writeSVG(w, p, 8*vg.Inch, 5*vg.Inch)
}

func burstCurvePlot(title string, bursts []BurstSeries, qps float32, burst int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since the starts were issued"
	p.Y.Label.Text = "projects reported running"
	p.X.Min, p.Y.Min = 0, 0
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	most, longest := 0, 0.0
	for i, b := range bursts {
		if len(b.Done) == 0 {
			continue
		}
		s := append([]time.Duration(nil), b.Done...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		pts := make(plotter.XYs, 0, len(s)+1)
		pts = append(pts, plotter.XY{})
		for j, d := range s {
			pts = append(pts, plotter.XY{X: d.Seconds(), Y: float64(j + 1)})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("burst curve %s: %w", b.Name, err)
		}
		styleLine(l, i)
		p.Add(l)
		p.Legend.Add(b.Name, l)
		most, longest = max(most, len(s)), max(longest, s[len(s)-1].Seconds())
	}
	if most == 0 {
		return nil, fmt.Errorf("burst curve: no starts")
	}
	if qps > 0 {
		end := max(longest, float64(most-burst)/float64(qps))
		floor := plotter.XYs{{X: 0, Y: float64(min(burst, most))}}
		if most > burst {
			floor = append(floor, plotter.XY{X: float64(most-burst) / float64(qps), Y: float64(most)})
		}
		floor = append(floor, plotter.XY{X: end, Y: float64(most)})
		l, err := plotter.NewLine(floor)
		if err != nil {
			return nil, err
		}
		l.Color = color.Black
		l.Width = vg.Points(1)
		l.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("client floor: burst %d, then %.0f creates/s", burst, qps), l)
	}
	return p, nil
}

func writeSVG(w io.Writer, p *plot.Plot, width, height vg.Length) error {
	c := vgsvg.New(width, height)
	p.Draw(draw.New(c))
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("write SVG: %w", err)
	}
	return nil
}

// Plot file names, next to the results file.
const (
	StartCDFFile   = "start-cdf.svg"
	BurstCurveFile = "bursts.svg"
)

// WritePlots draws r's start-latency CDF (every method) and its
// concurrent-start curve (every burst that is not a retry) into dir and
// returns the files written; a picture without data is skipped.
func WritePlots(dir string, r *Results) ([]string, error) {
	var written []string
	write := func(name string, draw func(io.Writer) error) error {
		var buf bytes.Buffer
		if err := draw(&buf); err != nil {
			return err
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			return err
		}
		written = append(written, path)
		return nil
	}
	var series []Series
	for _, l := range r.Latencies {
		series = append(series, Series{Name: l.Method, Samples: l.StartSamples})
	}
	if len(series) > 0 {
		title := fmt.Sprintf("Project start latency, %s (ready delay %s)", r.Began.Format("2006-01-02"), r.Config.ReadyDelay)
		if err := write(StartCDFFile, func(w io.Writer) error { return WriteStartCDF(w, title, series) }); err != nil {
			return written, err
		}
	}
	var bursts []BurstSeries
	running := 0
	for _, b := range r.Bursts {
		switch {
		case strings.HasPrefix(b.Method, "floor"):
			bursts = append(bursts, BurstSeries{Name: fmt.Sprintf("%s: %d starts", b.Method, b.Projects), Done: b.Done})
			continue
		case !b.Retry:
			bursts = append(bursts, BurstSeries{Name: fmt.Sprintf("ours (HTTP API): %d starts, %d running before", b.Projects, running), Done: b.Done})
		}
		running += b.Projects - b.Errors
	}
	if len(bursts) > 0 {
		title := fmt.Sprintf("Concurrent starts over the HTTP API, %s", r.Began.Format("2006-01-02"))
		if err := write(BurstCurveFile, func(w io.Writer) error { return WriteBurstCurve(w, title, bursts, r.Config.QPS, r.Config.QPSBurst) }); err != nil {
			return written, err
		}
	}
	return written, nil
}
