package proxy

import (
	"bufio"
	"compress/gzip"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"

	"trellis.dev/trellis/internal/proxy/health"
)

// metricsHandler serves /metrics in the Prometheus text format (version
// 0.0.4), gzipped when the scraper accepts it: the registry's families,
// then the target health families, which are written straight from the
// checker's counts. At issue 15's size those are 30,000 series (300,000
// more with per-target series); made as constant metrics each scrape, then
// sorted and encoded by the registry, they cost a hundred milliseconds of
// CPU and 20 MB of garbage per scrape, where writing them costs a few.
func (p *Proxy) metricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fams, err := p.metrics.reg.Gather()
		if err != nil {
			p.log.Warn("gathering metrics", "err", err)
			http.Error(w, "gathering metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		var out io.Writer = w
		if acceptsGzip(r) {
			w.Header().Set("Content-Encoding", "gzip")
			gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
			defer gz.Close()
			out = gz
		}
		bw := bufio.NewWriterSize(out, 32<<10)
		for _, f := range fams {
			if _, err := expfmt.MetricFamilyToText(bw, f); err != nil {
				p.log.Debug("writing metrics", "err", err)
				return
			}
		}
		writeHealthText(bw, p.health, p.targetMetrics)
		if err := bw.Flush(); err != nil {
			p.log.Debug("writing metrics", "err", err)
		}
	})
}

// acceptsGzip reports whether r's Accept-Encoding lists gzip.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}

// The target health families: per target group the counts of healthy and
// unhealthy targets and of ejections, and with per-target series
// (Config.TargetMetrics) each target's status and ejection.
var (
	groupHealthyFamily = textFamily{"trellis_target_group_healthy_targets", "gauge",
		"Targets of the group whose status is HEALTHY."}
	groupUnhealthyFamily = textFamily{"trellis_target_group_unhealthy_targets", "gauge",
		"Targets of the group whose status is UNHEALTHY."}
	ejectionsFamily = textFamily{"trellis_outlier_ejections_total", "counter",
		"Targets ejected by passive outlier detection (consecutive failed requests), since the target group appeared."}
	targetHealthFamily = textFamily{"trellis_target_health", "gauge",
		"The target's health status: 0 INITIAL, 1 HEALTHY, 2 UNHEALTHY, 3 UNAVAILABLE, 4 DRAINING (only with --target-metrics)."}
	targetEjectedFamily = textFamily{"trellis_target_ejected", "gauge",
		"1 while passive outlier detection leaves the target out of its group (only with --target-metrics)."}
)

// textFamily is a metric family's name, type and help, as the text format
// heads its series with them.
type textFamily struct{ name, typ, help string }

func (f textFamily) head(w *bufio.Writer) {
	w.WriteString("# HELP ")
	w.WriteString(f.name)
	w.WriteByte(' ')
	w.WriteString(f.help)
	w.WriteString("\n# TYPE ")
	w.WriteString(f.name)
	w.WriteByte(' ')
	w.WriteString(f.typ)
	w.WriteByte('\n')
}

// series writes one series of f: labels are name and value pairs.
func (f textFamily) series(w *bufio.Writer, buf []byte, value int64, labels ...string) []byte {
	buf = append(buf[:0], f.name...)
	buf = append(buf, '{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, labels[i]...)
		buf = append(buf, `="`...)
		buf = appendLabelValue(buf, labels[i+1])
		buf = append(buf, '"')
	}
	buf = append(buf, "} "...)
	buf = strconv.AppendInt(buf, value, 10)
	buf = append(buf, '\n')
	w.Write(buf)
	return buf
}

// appendLabelValue appends s escaped as the text format wants a label
// value: backslash, double quote and line feed.
func appendLabelValue(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// writeHealthText writes the target health families of c, series sorted
// by target group (and target).
func writeHealthText(w *bufio.Writer, c *health.Checker, perTarget bool) {
	groups := c.Summary()
	slices.SortFunc(groups, func(a, b health.GroupSummary) int { return strings.Compare(a.Name, b.Name) })
	var buf []byte
	if len(groups) > 0 {
		groupHealthyFamily.head(w)
		for _, g := range groups {
			buf = groupHealthyFamily.series(w, buf, int64(g.Healthy), "target_group", g.Name)
		}
		groupUnhealthyFamily.head(w)
		for _, g := range groups {
			buf = groupUnhealthyFamily.series(w, buf, int64(g.Unhealthy), "target_group", g.Name)
		}
		ejectionsFamily.head(w)
		for _, g := range groups {
			buf = ejectionsFamily.series(w, buf, int64(g.Ejections), "target_group", g.Name)
		}
	}
	if !perTarget {
		return
	}
	report := c.Report()
	if !slices.ContainsFunc(report, func(g health.GroupReport) bool { return len(g.Targets) > 0 }) {
		return
	}
	targetHealthFamily.head(w)
	for _, g := range report {
		for _, t := range g.Targets {
			buf = targetHealthFamily.series(w, buf, int64(t.Status), "target_group", g.Name, "target", t.Addr)
		}
	}
	targetEjectedFamily.head(w)
	for _, g := range report {
		for _, t := range g.Targets {
			ejected := int64(0)
			if t.Ejected {
				ejected = 1
			}
			buf = targetEjectedFamily.series(w, buf, ejected, "target_group", g.Name, "target", t.Addr)
		}
	}
}
