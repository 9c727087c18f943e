# Throughput and p99 end-to-end latency against the offered request rate,
# one line per channel latency. Drawn by scripts/bench --sweep / --plot:
#   gnuplot -e "datadir='DIR'; out='bench.png'; plottitle='...'" bench/bench.gp
# DIR holds, per channel latency N ms: latN.dat (offered req/s, completed
# req/s, p99 ms of the paced runs) and latN.max (req/s of the as-fast-as-
# possible run, drawn as a dashed level).
set terminal pngcairo size 1400,560 font "DejaVu Sans,11" noenhanced
set output out
set multiplot layout 1,2 title plottitle

files = system("ls ".datadir."/lat*.dat | sort -V")
latency(f) = substr(f, strstrt(f, "/lat") + 4, strlen(f) - 4)
maxfile(f) = substr(f, 1, strlen(f) - 4).".max"
maxof(f) = real(system("cat ".maxfile(f)))

set key top left box opaque
set grid
set xlabel "offered requests/s"
set xrange [0:*]
set offsets 0, graph 0.04, 0, 0

set title "Throughput (first produce to last completion)"
set ylabel "completed requests/s"
set yrange [0:*]
plot for [i=1:words(files)] word(files, i) using 1:2 with linespoints lw 2 pt 7 lc i \
         title latency(word(files, i))." ms channel latency", \
     for [i=1:words(files)] maxof(word(files, i)) with lines dt 2 lw 1.5 lc i \
         title sprintf("%s ms, as fast as possible: %.0f/s", latency(word(files, i)), maxof(word(files, i))), \
     x with lines dt 3 lc "gray40" title "completed = offered", \
     3000 with lines dt 4 lc "dark-green" title "target at 0 ms: 3,000/s", \
     2000 with lines dt 4 lc "dark-red" title "target at 100 ms: 2,000/s"

set title "p99 end-to-end latency (produce to completion received)"
set ylabel "p99, ms (log scale)"
set logscale y
set yrange [*:*]
plot for [i=1:words(files)] word(files, i) using 1:3 with linespoints lw 2 pt 7 lc i \
         title latency(word(files, i))." ms channel latency", \
     400 with lines dt 4 lc "dark-red" title "target at 1,000/s offered, 100 ms: 400 ms"
unset multiplot
