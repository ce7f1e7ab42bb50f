// Package charts draws the load generator's pictures — latency percentiles
// over time, throughput, backlog, CPU per service — as SVG (or PNG) line
// charts, one chart per file, with gonum.org/v1/plot.
//
// What is drawn: every Series is a line in its own colour (and dash pattern
// after the first seven; a series of one point is a dot), over a grid, named
// in a legend in a strip of its own right of the plot.
// Points whose X or Y is NaN or infinite are left out (a second with no
// answers has no percentile), and so are Y ≤ 0 on a logarithmic Y axis. A
// series left with no point stays in the legend and draws nothing; a chart
// with no point at all, in any series, is an error (ErrNoPoints), so that an
// empty picture never stands in for a measurement.
package charts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Chart is one picture: lines sharing two axes.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	// LogY draws Y on a logarithmic scale (latency percentiles).
	LogY bool
	// Width and Height of the picture; 0 means 20 cm × 10 cm.
	Width, Height vg.Length
}

// Series is one line: the points (X[i], Y[i]), drawn in X order as given.
type Series struct {
	Name string
	X, Y []float64
}

// ErrNoPoints is returned for a chart with nothing to draw.
var ErrNoPoints = errors.New("no points to draw")

// WriteSVG draws c as SVG into the file at path (created or truncated),
// whatever path's extension. Nothing is written when c cannot be drawn.
func WriteSVG(path string, c Chart) error { return writeFile(path, c, RenderSVG) }

// WritePNG draws c as PNG (96 dots per inch) into the file at path, as
// WriteSVG does.
func WritePNG(path string, c Chart) error { return writeFile(path, c, RenderPNG) }

func writeFile(path string, c Chart, render func(io.Writer, Chart) error) error {
	var buf bytes.Buffer
	if err := render(&buf, c); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("charts: %w", err)
	}
	return nil
}

// RenderSVG draws c as SVG to w.
func RenderSVG(w io.Writer, c Chart) error {
	return render(w, c, func(w, h vg.Length) vg.CanvasWriterTo { return vgsvg.New(w, h) })
}

// RenderPNG draws c as PNG to w.
func RenderPNG(w io.Writer, c Chart) error {
	return render(w, c, func(w, h vg.Length) vg.CanvasWriterTo {
		return vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))}
	})
}

func render(w io.Writer, c Chart, canvas func(w, h vg.Length) vg.CanvasWriterTo) error {
	p, legend, err := build(c)
	if err != nil {
		return fmt.Errorf("charts: %q: %w", c.Title, err)
	}
	width, height := c.Width, c.Height
	if width <= 0 {
		width = 20 * vg.Centimeter
	}
	if height <= 0 {
		height = 10 * vg.Centimeter
	}
	// The legend gets a strip of its own on the right, so that it never
	// hides a line.
	var names vg.Length
	for _, s := range c.Series {
		names = max(names, legend.TextStyle.Width(s.Name))
	}
	pad := legend.TextStyle.Font.Size
	// A viewer without the embedded font's metrics (SVG names the font,
	// it does not carry it) sets the names up to ~20 % wider: room for it.
	strip := min(legend.ThumbnailWidth+names*6/5+2*pad, width/2)
	img := canvas(width, height)
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, -strip, 0, 0))
	legend.Draw(draw.Crop(dc, width-strip+pad/2, 0, 0, -pad))
	if _, err := img.WriteTo(w); err != nil {
		return fmt.Errorf("charts: %q: %w", c.Title, err)
	}
	return nil
}

// build makes the plot of c and its legend.
func build(c Chart) (*plot.Plot, plot.Legend, error) {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	if c.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.Padding = vg.Points(3)
	points := 0
	for i, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return nil, legend, fmt.Errorf("series %q: %d x and %d y", s.Name, len(s.X), len(s.Y))
		}
		xys := make(plotter.XYs, 0, len(s.X))
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if !finite(x) || !finite(y) || (c.LogY && y <= 0) {
				continue
			}
			xys = append(xys, plotter.XY{X: x, Y: y})
		}
		points += len(xys)
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, legend, fmt.Errorf("series %q: %w", s.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
		l.Width = vg.Points(1.5)
		switch len(xys) {
		case 0:
		case 1:
			// A line through one point draws nothing: mark it.
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return nil, legend, fmt.Errorf("series %q: %w", s.Name, err)
			}
			sc.Color = l.Color
			sc.Shape = draw.CircleGlyph{}
			p.Add(sc)
		default:
			p.Add(l)
		}
		legend.Add(s.Name, l)
	}
	if points == 0 {
		return nil, legend, ErrNoPoints
	}
	return p, legend, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
