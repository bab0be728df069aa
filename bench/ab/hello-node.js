const http = require('http');
http.createServer((req, res) => { res.setHeader('Content-Type', 'text/plain'); res.end('hello'); }).listen(Number(process.argv[2]), '127.0.0.1');
