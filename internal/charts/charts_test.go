package charts_test

import (
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/vg"

	"treasure/internal/charts"
)

// svgText parses the file at path as XML and returns its root element's
// name and all its character data, joined by newlines.
func svgText(t *testing.T, path string) (root string, text string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	var b strings.Builder
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
		case xml.CharData:
			b.Write(tok)
			b.WriteByte('\n')
		}
	}
	return root, b.String()
}

func TestWriteSVGDrawsTitleAxesAndEverySeries(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name string
		c    charts.Chart
	}{
		{"linear", charts.Chart{
			Title: "throughput <steady> & drop", XLabel: "seconds", YLabel: "moves/s",
			Series: []charts.Series{
				{Name: "sent", X: []float64{0, 1, 2, 3}, Y: []float64{100, 2000, 2100, 1900}},
				{Name: "answered", X: []float64{0, 1, 2, 3}, Y: []float64{90, 1990, nan, 1950}},
				{Name: "nothing yet", X: nil, Y: nil},
				{Name: "one point", X: []float64{1.5}, Y: []float64{1000}},
			},
		}},
		{"log", charts.Chart{
			Title: "move → update latency", XLabel: "seconds", YLabel: "ms", LogY: true,
			Series: []charts.Series{
				{Name: "p50", X: []float64{0, 1, 2}, Y: []float64{0.4, 0.5, 0}},
				{Name: "p99", X: []float64{0, 1, 2}, Y: []float64{3, 14, 120}},
				{Name: "p99.9", X: []float64{1}, Y: []float64{300}},
			},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "chart.svg")
			if err := charts.WriteSVG(path, tc.c); err != nil {
				t.Fatal(err)
			}
			root, text := svgText(t, path)
			if root != "svg" {
				t.Errorf("root element %q, want svg", root)
			}
			for _, want := range []string{tc.c.Title, tc.c.XLabel, tc.c.YLabel} {
				if !strings.Contains(text, want) {
					t.Errorf("no %q in the SVG's text:\n%s", want, text)
				}
			}
			for _, s := range tc.c.Series {
				if !strings.Contains(text, s.Name) {
					t.Errorf("series %q not in the legend:\n%s", s.Name, text)
				}
			}
		})
	}
}

func TestWritePNGWritesAnImageOfTheSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chart.png")
	c := charts.Chart{Title: "backlog", Width: 4 * vg.Inch, Height: 2 * vg.Inch,
		Series: []charts.Series{{Name: "pending", X: []float64{0, 1}, Y: []float64{0, 35000}}}}
	if err := charts.WritePNG(path, c); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 4*96 || b.Dy() != 2*96 {
		t.Errorf("size %v, want 384×192 (96 dpi)", b)
	}
}

func TestWriteSVGRefusesWhatItCannotDraw(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    charts.Chart
		want string
	}{
		{"no series", charts.Chart{Title: "empty"}, charts.ErrNoPoints.Error()},
		{"only empty series", charts.Chart{Title: "empty", Series: []charts.Series{{Name: "a"}, {Name: "b", X: []float64{1}, Y: []float64{math.NaN()}}}}, charts.ErrNoPoints.Error()},
		{"only non-positive on a log scale", charts.Chart{Title: "log", LogY: true, Series: []charts.Series{{Name: "a", X: []float64{1, 2}, Y: []float64{0, -1}}}}, charts.ErrNoPoints.Error()},
		{"x and y of different lengths", charts.Chart{Title: "bad", Series: []charts.Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1}}}}, `series "a": 2 x and 1 y`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "chart.svg")
			err := charts.WriteSVG(path, tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.c.Title) {
				t.Fatalf("error %v, want one naming %q and saying %q", err, tc.c.Title, tc.want)
			}
			if tc.want == charts.ErrNoPoints.Error() && !errors.Is(err, charts.ErrNoPoints) {
				t.Errorf("%v is not ErrNoPoints", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a file was written: %v", err)
			}
		})
	}
}
