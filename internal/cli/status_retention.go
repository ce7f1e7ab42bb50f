package cli

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"treasure/internal/retention"
)

// renderRetention renders a retention report: per stream its span, age
// and headroom below its caps; per subject its first and last sequence,
// the safe sequence (what retention may remove up to) and the holder
// that sets it, with what is missing when a required holder is absent
// (then nothing of the subject is trimmed).
func renderRetention(w io.Writer, rep retention.Report) error {
	fmt.Fprintln(w, "\nretention (what may be removed: up to the safe seq, set by the holder named)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stream\tfirst seq\tlast seq\tage span\toldest\tmessages / cap\tbytes / cap\theadroom msgs\theadroom bytes\t")
	for _, s := range rep.Streams {
		if !s.Present {
			fmt.Fprintf(tw, "%s\t(absent)\t\t\t\t\t\t\t\t\n", s.Stream)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d / %s\t%d / %s\t%s\t%s\t\n", s.Stream, s.FirstSeq, s.LastSeq,
			seconds(s.AgeSpanSeconds), seconds(s.OldestAgeSeconds), s.Msgs, limit(s.MaxMsgs), s.Bytes, limit(s.MaxBytes),
			limit(s.HeadroomMsgs), limit(s.HeadroomBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "subject\tfirst seq\tlast seq\tmessages\tsafe seq\theld by\t")
	var notes []string
	for _, s := range rep.Streams {
		for _, sub := range s.Subjects {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t\n", sub.Subject, sub.FirstSeq, sub.LastSeq, sub.Msgs, sub.SafeSeq, sub.HeldBy)
			for _, h := range sub.Holders {
				if h.Missing {
					notes = append(notes, fmt.Sprintf("  %s: %s: %s", sub.Subject, h.Label()[len("missing:"):], h.Detail))
				}
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "missing holders (retention trims none of these subjects):")
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	for _, e := range rep.Errors {
		fmt.Fprintln(w, "retention: could not read:", e)
	}
	return nil
}

func limit(v int64) string {
	if v < 0 {
		return "none"
	}
	return strconv.FormatInt(v, 10)
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}
